"""SAE grids: many SAEs on one model, run by the sweep machinery (``listcopy sweep``, ``results``).

A grid file of SAEs names the model they read and the SAE settings, with the sweep's own specs,
axes and seeds (``listcopy.sweep.grid``) over ``sae.*`` keys::

    model = "runs/2layer_d64"     # a run directory or seed .pt (relative to the working directory)
    seeds = "0-2"                 # sae.seed
    [sae]                         # the base SAEConfig (listcopy.sae.config)
    steps = 2000
    [axes]
    "sae.d_sae" = [50, 100]
    "sae.k" = [2, 4]
    [[specs]]
    name = "topk"
    "sae.arch" = "topk"

Each run is one SAE (its own group): a worker trains it with ``train_sae`` into its run directory
(SAELens' files, then ``sae.json`` last: a run directory with ``sae.json`` is finished, and a
re-run takes its result from there instead of training again). An SAE killed while training
starts over. A run that raises is recorded as failed with its one-line error; the sweep goes on.
The database keeps the patched accuracy as ``acc`` (``seq_acc``, ``loss`` likewise) and every other
metric in ``metrics``. Nothing here imports torch until a run trains.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

from ..config import ConfigError
from ..sweep.grid import Grid, GridError, grid_over
from ..sweep.results import Columns, counts, mean_std
from .config import SAEConfig

GRID_KEYS = ("model", "sae", "specs", "axes", "seeds")
SECTIONS = {"sae": SAEConfig}
RECORD_FILE = "sae.json"  # listcopy.sae.io.RECORD_FILE (not imported: that module imports torch)
RUN_FILES = ("cfg.json", "sae_weights.safetensors", RECORD_FILE)  # SAELens' files, the record last


@dataclass(frozen=True)
class SAERunConfig:
    """One run of an SAE grid: the model it reads (a resolved path) and the SAE's settings."""

    model: str
    sae: SAEConfig

    @property
    def kind(self) -> "SAEKind":
        return SAE_KIND

    @property
    def name(self) -> str:
        return self.sae.name

    def to_dict(self) -> dict[str, Any]:
        return {"kind": SAE_KIND.name, "model": self.model, "sae": self.sae.to_dict()}

    def flat(self) -> dict[str, Any]:
        return {"model": self.model, **{f"sae.{k}": v for k, v in self.sae.to_dict().items()}}


def _metric(name: str) -> Any:
    return lambda r: (r.get("metrics") or {}).get(name)


SAE_VALUES = {"baseline_acc": _metric("baseline_acc"), "patched_acc": lambda r: r["acc"],
              "drop": _metric("drop"), "l0": _metric("l0"), "dead": _metric("dead"),
              "explained_variance": _metric("explained_variance"), "mse": _metric("mse"),
              "wall_time_s": lambda r: r["wall_time_s"], "status": lambda r: r["status"]}
SUMMARY = ("n", "done", "failed", "pending", "patched_mean", "patched_std", "drop_mean", "l0_mean",
           "dead_mean", "ev_mean")


def sae_values(r: dict[str, Any]) -> dict[str, Any]:
    """A database row -> the runs table's result columns."""
    return {name: get(r) for name, get in SAE_VALUES.items()}


def sae_aggregate(runs: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Distinct runs -> counts, and the mean (and spread) of the metrics of those that are done."""
    done = [sae_values(r) for r in runs if r["status"] == "done"]

    def mean(name: str) -> float | None:
        return mean_std([v[name] for v in done if v[name] is not None])[0]

    patched = mean_std([v["patched_acc"] for v in done if v["patched_acc"] is not None])
    return {**counts(runs), "patched_mean": patched[0], "patched_std": patched[1],
            "drop_mean": mean("drop"), "l0_mean": mean("l0"), "dead_mean": mean("dead"),
            "ev_mean": mean("explained_variance")}


def sae_caption(rows: Sequence[dict[str, Any]]) -> str:
    models = sorted({r["config"].model for r in rows})
    return (f"{len(rows)} entries: SAEs on {', '.join(models)}; accuracy on the validation lists, "
            "drop = baseline_acc - patched_acc (the SAE's reconstruction spliced in)")


_ACC = ".5f"
SAE_COLUMNS = Columns(
    always=("sae.arch", "sae.d_sae", "sae.k", "sae.lr"), seed_key="sae.seed",
    results=tuple(SAE_VALUES), values=sae_values, summary=SUMMARY, aggregate=sae_aggregate,
    caption=sae_caption, keys=tuple(SAERunConfig("", SAEConfig()).flat()),
    formats={"baseline_acc": _ACC, "patched_acc": _ACC, "drop": _ACC, "patched_mean": _ACC,
             "patched_std": _ACC, "drop_mean": _ACC, "explained_variance": ".4f",
             "ev_mean": ".4f", "l0": ".3f", "l0_mean": ".3f", "mse": ".3g",
             "wall_time_s": ".1f"})


class SAEKind:
    """SAE runs for the sweep (see ``listcopy.sweep.kinds`` for what each method answers)."""

    name = "sae"
    run_files = RUN_FILES
    result_file = RECORD_FILE
    columns = SAE_COLUMNS

    def from_dict(self, data: Mapping[str, Any]) -> SAERunConfig:
        if not isinstance(data, Mapping) or not isinstance(data.get("model"), str):
            raise ConfigError("an SAE run's settings need a model path and an sae table")
        return SAERunConfig(data["model"], SAEConfig.from_dict(data.get("sae", {})))

    def from_flat(self, settings: Mapping[str, Any], base: SAERunConfig) -> SAERunConfig:
        sae = {**base.sae.to_dict(), **{k.partition(".")[2]: v for k, v in settings.items()}}
        return SAERunConfig(base.model, SAEConfig.from_dict(sae))

    def with_seed(self, config: SAERunConfig, seed: int) -> SAERunConfig:
        return SAERunConfig(config.model, config.sae.replace(seed=seed))

    def seed(self, config: SAERunConfig) -> int:
        return config.sae.seed

    def group_key(self, config: SAERunConfig) -> str:
        return json.dumps(config.to_dict(), sort_keys=True)  # one SAE per group

    def cost(self, config: SAERunConfig) -> float:
        return config.sae.steps * config.sae.batch_size * config.sae.d_sae

    def label(self, config: SAERunConfig) -> str:
        return f"SAE {config.sae.arch} d_sae {config.sae.d_sae} on {Path(config.model).name}"

    def steps(self, config: SAERunConfig) -> int:
        return config.sae.steps

    def finished(self, record: Mapping[str, Any]) -> dict[str, Any] | None:
        """The database's result fields of a complete sae.json; None for anything else."""
        metrics = record.get("metrics")
        if not isinstance(metrics, Mapping) or "patched_acc" not in metrics:
            return None
        final = (record.get("training") or {}).get("final") or {}
        return {"status": "done", "stop_reason": "max_steps",
                "steps": (record.get("sae_config") or {}).get("steps"),
                "loss": metrics.get("patched_loss"), "acc": metrics["patched_acc"],
                "seq_acc": metrics.get("patched_seq_acc"), "steps_to_threshold": None,
                "wall_time_s": record.get("wall_time_s"), "error": None,
                "metrics": {**{k: v for k, v in metrics.items() if k != "per_position"},
                            "train_loss": final.get("loss")}}

    def parse_grid(self, data: Mapping[str, Any], source: str) -> Grid:
        return parse_sae_grid(data, source)

    def train_group(self, task) -> list[dict[str, Any]]:
        """Train each run of ``task`` (a ``GroupTask``) that has no sae.json yet; one result each."""
        from ..sweep.store import failure

        return [_train_one(self.from_dict(c), Path(d), failure)
                for c, d in zip(task.configs, task.run_dirs)]


SAE_KIND = SAEKind()


def _train_one(config: SAERunConfig, run_dir: Path, failure) -> dict[str, Any]:
    from .run import train_sae

    done = read_result(run_dir)
    if done is not None:  # trained before a kill reached the database
        return done
    for stale in run_dir.glob(".sae.*"):  # a save that was killed half-way
        shutil.rmtree(stale, ignore_errors=True)
    try:
        train_sae(config.model, config.sae, run_dir)
    except Exception as err:  # recorded as this run's failure; the sweep goes on
        return failure(err)
    return read_result(run_dir) or failure(f"{run_dir / RECORD_FILE}: not written")


def read_result(run_dir: Path) -> dict[str, Any] | None:
    """The result fields of a finished run directory (a readable, complete sae.json), else None."""
    try:
        record = json.loads((run_dir / RECORD_FILE).read_text())
    except (OSError, ValueError):
        return None
    return SAE_KIND.finished(record) if isinstance(record, dict) else None


def parse_sae_grid(data: Mapping[str, Any], source: str = "grid") -> Grid:
    """An SAE grid file's table -> a Grid of SAERunConfigs; every problem one GridError line."""
    unknown = [k for k in data if k not in GRID_KEYS]
    if unknown:
        raise GridError(f"{source}: unknown key {unknown[0]!r} in an SAE grid: allowed are "
                        + ", ".join(GRID_KEYS))
    model = data.get("model")
    if not isinstance(model, str) or not model.strip():
        raise GridError(f"{source}: an SAE grid needs model = \"PATH\" (a run directory or seed "
                        ".pt) before its [sae] table")
    path = Path(model).expanduser()
    if not path.exists():
        raise GridError(f"{source}: model = {model!r}: no such run directory or file")
    table = data.get("sae", {})
    if not isinstance(table, Mapping):
        raise GridError(f"{source}: sae must be a table of SAE settings ([sae])")
    try:
        base = SAERunConfig(str(path.resolve()), SAEConfig.from_dict(table))
    except ConfigError as err:
        raise GridError(f"{source}: [sae]: {err}") from None
    return grid_over(base, data, source, SECTIONS)
