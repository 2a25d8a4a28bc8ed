"""What a sweep's runs are: model training runs (the default) or another kind of job (SAEs).

The grid, the store, the workers and the results touch a run's settings only through its kind:

    from_dict / from_flat / with_seed / seed   build and seed the settings of one run
    group_key / cost / label / steps           which runs a worker takes together, and in what order
    result_file / finished(record)             a finished run's record in its run directory
    run_files                                  the files of a run directory (sent back by Ray)
    columns                                    the results tables (``results.Columns``)

A model run's settings are a :class:`Config` (``MODEL``, defined here); any other settings object
carries its kind as ``.kind`` and its ``to_dict()`` names it under ``"kind"`` (``listcopy.sae.grid``:
an SAE trained on a model). A grid file names its kind by its keys (an ``[sae]`` table, or a
``model = PATH`` string). Nothing here imports torch.
"""

from __future__ import annotations

from typing import Any, Mapping

from ..config import Config, ConfigError, ensemble_key


class ModelKind:
    """Model training runs: a Config each; runs of one shape train together in the ensemble engine."""

    name = "model"

    @property
    def run_files(self) -> tuple[str, ...]:
        from ..checkpoint import RUN_FILES

        return RUN_FILES

    @property
    def result_file(self) -> str:
        from ..checkpoint import RUN_FILE

        return RUN_FILE

    @property
    def columns(self):
        from .results import MODEL_COLUMNS

        return MODEL_COLUMNS

    def from_dict(self, data: Mapping[str, Any]) -> Config:
        return Config.from_dict(data)

    def from_flat(self, settings: Mapping[str, Any], base: Config) -> Config:
        return Config.from_flat(settings, base=base)

    def with_seed(self, config: Config, seed: int) -> Config:
        return config.replace(train={"seed": seed})

    def seed(self, config: Config) -> int:
        return config.train.seed

    def group_key(self, config: Config) -> str:
        return ensemble_key(config)

    def cost(self, config: Config) -> float:
        from .grid import run_cost

        return run_cost(config)

    def label(self, config: Config) -> str:
        from .grid import shape_label

        return shape_label(config)

    def steps(self, config: Config) -> int:
        return config.train.max_steps

    def finished(self, record: Mapping[str, Any]) -> dict[str, Any] | None:
        """The database's result fields of a run.json that says the run ended; else None."""
        from .store import result_of

        return result_of(dict(record)) if record.get("status") in ("done", "failed") else None


MODEL = ModelKind()


def kind_of(config: Any):
    """The kind of one run's settings."""
    return MODEL if isinstance(config, Config) else config.kind


def kind_named(name: Any):
    if name == MODEL.name:
        return MODEL
    if name == "sae":
        from ..sae.grid import SAE_KIND

        return SAE_KIND
    raise ConfigError(f"unknown kind of sweep run {name!r}: model or sae")


def kind_of_dict(data: Mapping[str, Any]):
    """The kind of settings written by ``to_dict()`` (a Config's has no ``"kind"``)."""
    return kind_named(data.get("kind", MODEL.name) if isinstance(data, Mapping) else MODEL.name)


def kind_of_grid(data: Mapping[str, Any]):
    """The kind a grid file's table describes: SAEs if it has an ``[sae]`` table or a model path."""
    return kind_named("sae") if "sae" in data or isinstance(data.get("model"), str) else MODEL
