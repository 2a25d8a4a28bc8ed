"""The capacity frontier: the smallest d_model through which a task still passes SEP.

For each point (a task and a depth), ``d_model`` is searched over powers of two until at least half
of the seeds reach the threshold, then bisected between the last failure and the first success.
Points advance in rounds: every unresolved point proposes its next d_model, and all proposals of a
round (x seeds) are trained as one batch of runs, so shapes train together and points in parallel.
The runs go through an ``evaluate(configs) -> results`` callable; ``listcopy frontier`` passes the
sweep machinery's, so a search is resumable and its runs live in the sweep database.

A round's seeds of one d_model need not all finish: once ``seeds_needed(need, n_seeds)`` of them
have reached the threshold the answer at that d_model is known ("passes"), and
:func:`train_in_process` and :func:`sweep_evaluate` given that ``quorum`` stop the others there
(``stop_reason`` "quorum"; their fraction is then a lower bound). A d_model that fails still trains
every seed to its step budget, as a failure is only known there.

The information-theoretic reference for a point is ``list_len * log2(n_digits)`` bits: what SEP
must carry.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

from .config import Config, ConfigError

# evaluate(configs) -> one result per config: {"steps_to_threshold": int | None, "acc": float}
Evaluate = Callable[[Sequence[Config]], Sequence[Mapping[str, Any]]]


@dataclass
class Search:
    """Where one point's search stands: tried d_model -> fraction of seeds at threshold."""

    point: dict[str, Any]
    d_max: int
    step: int = 1  # d_model must be a multiple of this (n_heads)
    tried: dict[int, float] = field(default_factory=dict)
    need: float = 0.5

    def ok(self, d: int) -> bool:
        return self.tried[d] >= self.need

    def next_d(self) -> int | None:
        """The next d_model to try, or None when the answer is known."""
        successes = [d for d in self.tried if self.ok(d)]
        if not successes:  # doubling phase
            d = self.step if not self.tried else 2 * max(self.tried)
            return d if d <= self.d_max else None
        hi = min(successes)
        failures = [d for d in self.tried if not self.ok(d) and d < hi]
        lo = max(failures) if failures else 0
        if hi - lo <= self.step:
            return None
        mid = (lo + hi) // 2 // self.step * self.step
        return mid if lo < mid < hi else None

    @property
    def minimal(self) -> int | None:
        """The smallest d_model found to pass (None: not even d_max)."""
        successes = [d for d in self.tried if self.ok(d)]
        return min(successes) if successes and self.next_d() is None else None


@dataclass(frozen=True)
class FrontierPoint:
    point: dict[str, Any]
    minimal_d_model: int | None
    bits: float  # list_len * log2(n_digits)
    tried: dict[int, float]

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["tried"] = {str(k): v for k, v in sorted(self.tried.items())}
        return d


def seeds_needed(need: float, n_seeds: int) -> int:
    """The fewest seeds of ``n_seeds`` that make a fraction of at least ``need``."""
    return next(k for k in range(n_seeds + 1) if k / n_seeds >= need)  # as Search.ok compares


def frontier_configs(base: Config, axes: Mapping[str, Sequence[Any]]) -> list[dict[str, Any]]:
    """The points: the cartesian product of the axes (``{"task.n_digits": [10, 20]}``)."""
    keys = list(axes)
    for key in keys:
        if not axes[key]:
            raise ConfigError(f"frontier axis {key} is empty")
    points = [dict(zip(keys, values)) for values in itertools.product(*(axes[k] for k in keys))]
    for point in points:
        _config(base, point, base.model.n_heads)  # validate every point up front
    return points


def _config(base: Config, point: Mapping[str, Any], d_model: int, seed: int | None = None) -> Config:
    settings = {**point, "model.d_model": d_model}
    if seed is not None:
        settings["train.seed"] = seed
    return Config.from_flat(settings, base=base)


def round_configs(base: Config, points: Sequence[Mapping[str, Any]], d_model: int) -> list[Config]:
    """Every point at ``d_model`` (rounded down to a multiple of n_heads, at least n_heads)."""
    step = base.model.n_heads
    return [_config(base, p, max(step, d_model // step * step)) for p in points]


def search_frontier(base: Config, axes: Mapping[str, Sequence[Any]], seeds: Iterable[int],
                    evaluate: Evaluate, d_max: int = 256, need: float = 0.5,
                    on_round: Callable[[int, int], None] | None = None) -> list[FrontierPoint]:
    """Minimal d_model per point at which at least ``need`` of the seeds reach the threshold."""
    seeds = list(seeds)
    if not seeds:
        raise ConfigError("frontier needs at least one seed")
    searches = [Search(p, d_max, base.model.n_heads, need=need)
                for p in frontier_configs(base, axes)]
    rounds = 0
    while True:
        todo = [(s, s.next_d()) for s in searches]
        todo = [(s, d) for s, d in todo if d is not None]
        if not todo:
            break
        configs = [_config(base, s.point, d, seed) for s, d in todo for seed in seeds]
        results = list(evaluate(configs))
        if len(results) != len(configs):
            raise RuntimeError("evaluate returned the wrong number of results")
        for i, (search, d) in enumerate(todo):
            mine = results[i * len(seeds): (i + 1) * len(seeds)]
            reached = sum(r.get("steps_to_threshold") is not None for r in mine)
            search.tried[d] = reached / len(seeds)
        rounds += 1
        if on_round is not None:
            on_round(rounds, len(configs))
    out = []
    for s in searches:
        cfg = _config(base, s.point, s.step)
        bits = cfg.task.list_len * math.log2(cfg.task.n_digits)
        out.append(FrontierPoint(dict(s.point), s.minimal, bits, dict(s.tried)))
    return out


def exhaustive_minimal(base: Config, point: Mapping[str, Any], seeds: Sequence[int],
                       evaluate: Evaluate, d_values: Sequence[int], need: float = 0.5) -> int | None:
    """The reference: train every d_model in ``d_values``; the smallest that passes."""
    for d in sorted(d_values):
        results = evaluate([_config(base, point, d, s) for s in seeds])
        if sum(r.get("steps_to_threshold") is not None for r in results) / len(seeds) >= need:
            return d
    return None


def format_frontier(points: Sequence[FrontierPoint], d_max: int) -> str:
    keys = list(points[0].point) if points else []
    lines = ["| " + " | ".join(keys + ["minimal d_model", "bits (L log2 n)", "tried"]) + " |",
             "|" + "---|" * (len(keys) + 3)]
    for p in points:
        found = str(p.minimal_d_model) if p.minimal_d_model is not None else f"> {d_max}"
        tried = ", ".join(f"{d}:{f:.2f}" for d, f in sorted(p.tried.items()))
        lines.append("| " + " | ".join([str(p.point[k]) for k in keys]
                                       + [found, f"{p.bits:.2f}", tried]) + " |")
    return "\n".join(lines)


def train_in_process(configs: Sequence[Config], quorum: int | None = None
                     ) -> list[dict[str, Any]]:
    """An ``Evaluate`` without a database: configs of one shape train together, in this process
    (with a ``quorum``, the rest of a shape stop once that many of it have passed)."""
    from .config import ensemble_key
    from .training import train_ensemble

    results: list[dict[str, Any] | None] = [None] * len(configs)
    groups: dict[str, list[int]] = {}
    for i, c in enumerate(configs):
        groups.setdefault(ensemble_key(c), []).append(i)
    for idx in groups.values():
        runs = train_ensemble([configs[i] for i in idx], progress=False, quorum=quorum)
        for i, run in zip(idx, runs):
            results[i] = {"steps_to_threshold": run.steps_to_threshold, **run.metrics}
    return results  # type: ignore[return-value]


def sweep_evaluate(out, *, workers: int | None = None, backend: str = "local",
                   address: str | None = None, progress: bool = True,
                   allow_large: bool = False, quorum: int | None = None) -> Evaluate:
    """An ``Evaluate`` through the sweep machinery: runs land in ``out``'s database and run
    directories, shapes train together over the sweep's workers, and a re-run (after a crash, or
    to extend the search) reuses every finished run instead of training it again. With a
    ``quorum`` each shape is one group over all of a worker's threads (run_sweep)."""
    from .resources import MAX_ENTRIES
    from .sweep.grid import Grid, Spec, config_hash, shape_label
    from .sweep.runner import run_sweep
    from .sweep.store import DB_FILE, Store

    def evaluate(configs: Sequence[Config]) -> list[dict[str, Any]]:
        seeds = tuple(sorted({c.train.seed for c in configs}))
        specs: dict[str, Spec] = {}
        for c in configs:
            flat = {k: v for k, v in c.flat().items() if k != "train.seed"}
            spec = Spec(f"frontier {shape_label(c)}", tuple(sorted(flat.items())))
            specs.setdefault(json_key(spec.overrides), spec)
        grid = Grid(Config(), tuple(specs.values()), (), seeds, source="frontier",
                    max_entries=None if allow_large else MAX_ENTRIES, progress=progress)
        run_sweep(grid, out, workers=workers, backend=backend, address=address,
                  progress=progress, allow_large=allow_large, quorum=quorum)
        with Store(Path(out) / DB_FILE, readonly=True) as store:
            rows = {r["key"]: r for r in store.rows()}
        results = []
        for c in configs:
            row = rows[config_hash(c)]
            reached = row["steps_to_threshold"] if row["status"] == "done" else None
            results.append({"steps_to_threshold": reached, "acc": row["acc"],
                            "status": row["status"]})
        return results

    return evaluate


def json_key(items: Any) -> str:
    import json

    return json.dumps(items, sort_keys=True, default=str)
