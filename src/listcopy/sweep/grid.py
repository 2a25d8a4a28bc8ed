"""Grid files: a base config, named specs, axes and seeds -> the runs of a sweep, grouped by shape.

A grid file (TOML)::

    seeds = "0-3"                      # or [0, 1, 2, 3]; without it each entry keeps its own
                                       # train.seed (with it, train.seed may not be set elsewhere)

    [model]                            # the base config: [task] / [model] / [train] tables
    d_model = 128                      # (or the same tables under [base])
    [train]
    max_steps = 20_000

    [[specs]]                          # optional: the notebook's list of named overrides
    name = "d128_2layer"
    "model.n_layers" = 2               # a quoted key, or a dotted one: model.n_layers = 2

    [axes]                             # optional: the cartesian product is taken
    "train.lr" = [1e-3, 3e-4]

Every point of ``specs x axes x seeds`` is one :class:`Point` (a name, the settings that made it
and a full, validated Config). Points with the same config are one :class:`PlannedRun` (a run to
train, not yet a trained ``training.Run``), trained once and reported under each name (the
notebook's grid has ``d128`` and ``d128_3layer``, which are the same). Planned runs whose configs
have one ``config.ensemble_key`` are one shape, trained together by the ensemble engine:
:func:`group_runs`. ``seeds`` follows ``config.parse_seeds``, the package's one seed-range syntax.

A grid is counted before it is expanded (``Grid.n_entries``: at most ``MAX_POINTS`` entries unless
``allow_large``, and what fits in memory), its spec x axes combinations are built and checked once
(``Grid.combos``, lazily), and each seed only replaces ``train.seed`` and its hash: a million
entries take seconds, with a progress bar on stderr for large grids.

A grid of another kind of run (``sweep/kinds.py``: an ``[sae]`` table and a ``model = PATH``,
see ``listcopy.sae.grid``) is parsed by its kind, with the same specs, axes and seeds. Nothing
here imports torch. Every problem is a one-line :class:`GridError` (a ``ConfigError``).
"""

from __future__ import annotations

import functools
import hashlib
import itertools
import json
import math
import sys
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

from ..config import SHARED_TRAIN_KEYS  # noqa: F401  (re-exported: what an ensemble shares)
from ..config import (SECTIONS, Config, ConfigError, ensemble_keys, parse_seeds, read_toml,
                      short_key)
from ..resources import ALLOW_LARGE, MAX_ENTRIES, POINT_BYTES, Limits, check_count_memory
from .kinds import MODEL, kind_of, kind_of_grid

TOP_LEVEL_KEYS = ("base", "specs", "axes", "seeds", *SECTIONS)
MAX_POINTS = MAX_ENTRIES  # the policy limit on one grid's entries (resources.Limits)


class GridError(ConfigError):
    """A grid file that cannot be used. The message is one line."""


@dataclass(frozen=True)
class Spec:
    """One named set of overrides: ``{"model.d_model": 128, ...}``."""

    name: str
    overrides: tuple[tuple[str, Any], ...]


@dataclass(frozen=True)
class Point:
    """One entry of the grid: a name, the settings that made it (dotted keys), its config."""

    name: str
    settings: tuple[tuple[str, Any], ...]
    config: Config
    index: int = 0  # position in the grid (specs x axes x seeds order)
    known_key: str = field(default="", repr=False, compare=False)  # config_hash, if known

    @property
    def seed(self) -> int:
        return kind_of(self.config).seed(self.config)

    @property
    def key(self) -> str:
        return self.known_key or config_hash(self.config)


@dataclass(frozen=True)
class PlannedRun:
    """One distinct configuration to train, and every grid entry that reports it."""

    key: str  # config_hash(config)
    config: Config
    points: tuple[Point, ...]

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(p.name for p in self.points))

    @property
    def seed(self) -> int:
        return kind_of(self.config).seed(self.config)


@dataclass(frozen=True)
class Grid:
    """``seeds``: every entry is trained with each of them; ``None``: each entry with its own
    ``train.seed`` (the base's, or its spec's). ``max_entries``: the policy limit on the number of
    entries (``None`` with ``--allow-large``)."""

    base: Config  # or another kind's settings (listcopy.sweep.kinds)
    specs: tuple[Spec, ...]
    axes: tuple[tuple[str, tuple[Any, ...]], ...]
    seeds: tuple[int, ...] | None
    source: str = "grid"
    max_entries: int | None = MAX_ENTRIES
    progress: bool = field(default=True, compare=False)  # bars on stderr for large grids
    text: bytes | None = field(default=None, compare=False, repr=False)  # the file, as read

    @property
    def n_entries(self) -> int:
        """specs x axes x seeds, counted without expanding anything."""
        return (max(1, len(self.specs)) * math.prod(len(v) for _, v in self.axes)
                * (len(self.seeds) if self.seeds is not None else 1))

    @property
    def shared_names(self) -> tuple[str, ...]:
        """Names that more than one ``[[specs]]`` carries (the notebook's grid has one): their
        entries stay apart by their settings, and ``results --group-by name`` refuses to pool
        them."""
        names = [s.name for s in self.specs]
        return tuple(n for n in dict.fromkeys(names) if names.count(n) > 1)

    def check_size(self) -> None:
        """The policy limit on entries, then the memory a plan of them takes (before expanding)."""
        n = self.n_entries
        if self.max_entries is not None and n > self.max_entries:
            raise GridError(f"{self.source}: {n:,} runs; at most {self.max_entries:,} in one grid"
                            f" unless {ALLOW_LARGE} is given")
        check_count_memory(f"{self.source}: grid entries", n, POINT_BYTES)

    @functools.cached_property
    def combos(self) -> tuple[Combo, ...]:
        """Every spec x axes combination, validated, in order (computed once, lazily)."""
        self.check_size()
        return tuple(self._combos())

    def _combos(self) -> Iterator[Combo]:
        specs = self.specs or (Spec("", ()),)
        keys = [k for k, _ in self.axes]
        total = self.n_entries // (len(self.seeds) if self.seeds is not None else 1)
        with progress_bar(total, f"{self.source}: checking", "config", self.progress) as bar:
            for i, spec in enumerate(specs):
                for values in itertools.product(*(v for _, v in self.axes)):  # lazily
                    combo = dict(zip(keys, values))
                    settings = {**dict(spec.overrides), **combo}
                    try:
                        config = kind_of(self.base).from_flat(settings, self.base)
                    except ConfigError as err:
                        raise GridError(f"{_where(self.source, i, spec, combo)}: {err}") from None
                    yield Combo(point_name(spec.name, combo, config), tuple(settings.items()),
                                config)
                    bar.update()

    def points(self) -> list[Point]:
        """Every entry of specs x axes x seeds, in that order (seeds vary fastest)."""
        out: list[Point] = []
        with progress_bar(self.n_entries, f"{self.source}: expanding", "entry",
                          self.progress) as bar:
            for combo in self.combos:
                for config, key in _seeded(combo.config, self.seeds):
                    out.append(Point(combo.name, combo.settings, config, len(out), key))
                bar.update(len(self.seeds) if self.seeds is not None else 1)
        return out

    def runs(self) -> list[PlannedRun]:
        return unique_runs(self.points())


@dataclass(frozen=True)
class Combo:
    """One spec x axes combination: its entry name, the settings that made it, its config."""

    name: str
    settings: tuple[tuple[str, Any], ...]
    config: Config


def _seeded(config: Config, seeds: tuple[int, ...] | None) -> Iterator[tuple[Config, str]]:
    """``config`` with each seed, and its ``config_hash``: only the seed is checked and hashed
    again (a grid of a million entries is expanded in seconds)."""
    if seeds is None:
        yield config, config_hash(config)
        return
    if not isinstance(config, Config):  # another kind's settings: seeded and hashed by its kind
        kind = kind_of(config)
        for seed in seeds:
            seeded = kind.with_seed(config, seed)
            yield seeded, config_hash(seeded)
        return
    head, tail = _hash_around_seed(config)
    for seed in seeds:
        try:
            train = config.train.with_seed(seed)
        except ConfigError as err:
            raise GridError(f"seeds: {err}") from None
        text = f"{head}{seed}{tail}"  # the canonical JSON of the seeded config
        yield Config(config.task, config.model, train), hashlib.sha256(text.encode()).hexdigest()[:16]


_SEED_MARK = "\x00seed\x00"


def _hash_around_seed(config: Config) -> tuple[str, str]:
    """``config_hash``'s canonical JSON of ``config``, cut where the seed's digits go."""
    data = config.to_dict()
    data["train"]["seed"] = _SEED_MARK
    head, tail = _canonical(data).split(json.dumps(_SEED_MARK))
    return head, tail


def progress_bar(total: int, desc: str, unit: str, enabled: bool = True):
    """A tqdm bar on stderr that shows itself only after a second (large grids)."""
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit=unit, delay=1.0, leave=False, dynamic_ncols=True,
                disable=not enabled or total < 10_000, file=sys.stderr)


def _where(source: str, i: int, spec: Spec, combo: Mapping[str, Any]) -> str:
    parts = [source]
    if spec.name or spec.overrides:
        parts.append(f"specs[{i}]" + (f" ({spec.name})" if spec.name else ""))
    if combo:
        parts.append("axes " + ", ".join(f"{k}={_fmt(v)}" for k, v in combo.items()))
    return ": ".join(parts)


def point_name(spec_name: str, combo: Mapping[str, Any], config: Config) -> str:
    """The spec's name, then the axis values (``d128,lr=0.001``); the model name if neither."""
    parts = [spec_name] if spec_name else []
    parts += [f"{short_key(k)}={_fmt(v)}" for k, v in combo.items()]
    return ",".join(parts) if parts else config.name


def _fmt(value: Any) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    return f"{value:g}" if isinstance(value, float) else str(value)


# ---- identity and grouping -------------------------------------------------------------------

def config_hash(config: Config) -> str:
    """sha256 of the config's canonical JSON: equal configs, equal hashes (16 hex digits)."""
    return hashlib.sha256(_canonical(config.to_dict()).encode()).hexdigest()[:16]


def _canonical(data: Mapping[str, Any]) -> str:
    return json.dumps(data, sort_keys=True, separators=(",", ":"))


def unique_runs(points: Sequence[Point]) -> list[PlannedRun]:
    """One PlannedRun per distinct config, in order of first appearance."""
    by_key: dict[str, list[Point]] = {}
    for p in points:
        by_key.setdefault(p.key, []).append(p)
    return [PlannedRun(k, ps[0].config, tuple(ps)) for k, ps in by_key.items()]


def shape_label(config: Config) -> str:
    """``3layer_100dig_128d`` plus the model flags that differ from the defaults."""
    default = type(config.model)()
    flags = [f"{f.name}={_fmt(getattr(config.model, f.name))}" for f in fields(config.model)
             if f.name not in ("n_layers", "d_model")
             and getattr(config.model, f.name) != getattr(default, f.name)]
    return config.name + (f" ({', '.join(flags)})" if flags else "")


def run_cost(config: Config) -> float:
    """A rough cost of a run, for ordering work: steps x batch x positions x per-token work.

    Per token: the Q/K projections (layers x D^2) and the unembedding (D x V); each LayerNorm adds
    about 60 x D (measured at d_model 128: LN and biases make a 2-layer step ~1.5x slower).
    """
    m, t = config.model, config.task
    per_token = m.n_layers * m.d_model * m.d_model + m.d_model * t.vocab
    if m.ln:
        per_token += (m.n_layers + 1) * 60 * m.d_model
    return config.train.max_steps * config.train.batch_size * t.seq_len * per_token


def shape_keys(configs: Sequence[Any]) -> list[str]:
    """What runs trained together as one group share (a model's ``ensemble_key``), per config."""
    if all(isinstance(c, Config) for c in configs):
        return ensemble_keys(configs)
    return [kind_of(c).group_key(c) for c in configs]


def group_runs(runs: Sequence[PlannedRun], n_workers: int = 1,
               max_members: int | None = None) -> list[list[PlannedRun]]:
    """Runs of one shape form a group; big groups are split so that ``n_workers`` are kept busy.

    A shape with ``k`` runs gets ``ceil(n_workers * k / len(runs))`` chunks (at most ``k``), and no
    chunk exceeds ``max_members``. Groups come out costliest first (longest-job-first scheduling).
    """
    shapes: dict[str, list[PlannedRun]] = {}
    for run, key in zip(runs, shape_keys([r.config for r in runs])):
        shapes.setdefault(key, []).append(run)
    total = len(runs)
    groups: list[list[PlannedRun]] = []
    for members in shapes.values():
        k = len(members)
        n_chunks = min(k, max(1, math.ceil(n_workers * k / total)))
        if max_members:
            n_chunks = max(n_chunks, math.ceil(k / max_members))
        size = math.ceil(k / n_chunks)
        groups += [members[i: i + size] for i in range(0, k, size)]
    return sorted(groups, key=lambda g: -sum(kind_of(r.config).cost(r.config) for r in g))


# ---- parsing -----------------------------------------------------------------------------------

def load_grid(path: str | Path, allow_large: bool = False, progress: bool = True) -> Grid:
    """Read and validate a grid file; every problem is one GridError line naming the file."""
    path = Path(path)
    try:
        data, text = read_toml(path)
    except ConfigError as err:
        raise GridError(str(err)) from None
    if not data:  # an empty file is a mistake more often than the default run, once
        raise GridError(f"{path}: empty: a grid needs [base] settings, [[specs]], [axes] or "
                        "seeds")
    return parse_grid(data, source=str(path), allow_large=allow_large, progress=progress,
                      text=text)


def parse_grid(data: Mapping[str, Any], source: str = "grid", allow_large: bool = False,
               progress: bool = True, text: bytes | None = None) -> Grid:
    """A grid from its TOML tables; every entry is validated here (``Grid.combos``), so an error
    comes before any work."""
    kind = kind_of_grid(data)
    if kind is not MODEL:  # an SAE grid (listcopy.sae.grid)
        return kind.parse_grid(data, source)
    unknown = [k for k in data if k not in TOP_LEVEL_KEYS]
    if unknown:
        raise GridError(f"{source}: unknown key {unknown[0]!r}: allowed are "
                        + ", ".join(TOP_LEVEL_KEYS))
    sections = _base_sections(data, source)
    try:
        base = Config.from_dict(sections)
    except ConfigError as err:
        raise GridError(f"{source}: base config: {err}") from None
    specs = _parse_specs(data.get("specs", []), source)
    if "seeds" in data:
        _refuse_seed_settings(sections, specs, source)
    return grid_over(base, data, source, allow_large=allow_large, progress=progress, text=text,
                     specs=specs)


def grid_over(base: Any, data: Mapping[str, Any], source: str,
              sections: Mapping[str, Any] = SECTIONS, *, allow_large: bool = False,
              progress: bool = True, text: bytes | None = None,
              specs: tuple[Spec, ...] | None = None) -> Grid:
    """The Grid of ``base`` (a Config, or another kind's settings) and a grid file's specs (parsed
    here unless given), axes and seeds over the keys of ``sections``; every entry is validated
    (``Grid.combos``) before it returns, so an error comes before any work."""
    if specs is None:
        specs = _parse_specs(data.get("specs", []), source, sections)
    axes = _parse_axes(data.get("axes", {}), source, sections)
    limits = Limits.of(allow_large)
    seeds = None  # each entry keeps its own seed
    if "seeds" in data:
        try:
            seeds = parse_seeds(data["seeds"], f"{source}: seeds =", limits.max_seeds)
        except ConfigError as err:
            raise GridError(str(err)) from None
    grid = Grid(base, specs, axes, seeds, source, limits.max_entries, progress, text)
    grid.combos  # every entry validated now, so the error comes before any work
    return grid


def _base_sections(data: Mapping[str, Any], source: str) -> dict[str, Any]:
    sections = {k: data[k] for k in SECTIONS if k in data}
    if "base" in data:
        if sections:
            raise GridError(f"{source}: give the base config either as [base] or as top-level "
                            f"[{'] ['.join(sections)}] tables, not both")
        if not isinstance(data["base"], Mapping):
            raise GridError(f"{source}: base must be a table of [base.task] / [base.model] / "
                            "[base.train]")
        sections = dict(data["base"])
    for name, table in sections.items():
        misplaced = [k for k in TOP_LEVEL_KEYS if isinstance(table, Mapping) and k in table]
        if misplaced:
            raise GridError(f"{source}: {misplaced[0]!r} inside [{name}]: top-level keys such as "
                            f"{misplaced[0]} must come before the first [table]")
    return sections


def _refuse_seed_settings(sections: Mapping[str, Any], specs: Sequence[Spec], source: str) -> None:
    """With top-level ``seeds``, ``train.seed`` may not be set anywhere else (it would be
    overridden without a word)."""
    train = sections.get("train")
    where = ["[train]"] if isinstance(train, Mapping) and "seed" in train else []
    where += [f"specs[{i}] ({s.name})" for i, s in enumerate(specs)
              if any(k == "train.seed" for k, _ in s.overrides)]
    if where:
        raise GridError(f"{source}: {where[0]} sets train.seed and the grid has top-level seeds;"
                        " give seeds in one place (without seeds, each entry keeps its own"
                        " train.seed)")


MAX_NAME = 200  # characters of a spec name (it names run directories: 255 bytes at most)


def _parse_specs(raw: Any, source: str, sections: Mapping[str, Any] = SECTIONS) -> tuple[Spec, ...]:
    if not isinstance(raw, list) or not all(isinstance(s, Mapping) for s in raw):
        raise GridError(f"{source}: specs must be an array of tables ([[specs]] with a name "
                        "and overrides)")
    specs: list[Spec] = []
    for i, spec in enumerate(raw):
        spec = dict(spec)
        name = spec.pop("name", f"spec{i}")
        if not isinstance(name, str) or not name.strip():
            raise GridError(f"{source}: specs[{i}].name = {name!r}: must be a non-empty string")
        if len(name) > MAX_NAME:
            raise GridError(f"{source}: specs[{i}].name: {len(name)} characters; at most "
                            f"{MAX_NAME} (it names the run directories)")
        where = f"{source}: specs[{i}] ({name})"
        overrides = _flatten(spec, where, sections)
        for key, value in overrides.items():
            _check_scalar(value, f"{where}: {key}")
        specs.append(Spec(name, tuple(overrides.items())))
    return tuple(specs)


def _parse_axes(raw: Any, source: str, sections: Mapping[str, Any] = SECTIONS
                ) -> tuple[tuple[str, tuple[Any, ...]], ...]:
    if not isinstance(raw, Mapping):
        raise GridError(f"{source}: axes must be a table of setting = [values]")
    axes = []
    for key, values in _flatten(raw, f"{source}: axes", sections).items():
        where = f"{source}: axes {key}"
        if short_key(key) == "seed":  # train.seed, sae.seed
            raise GridError(f"{where}: give seeds with the top-level seeds key")
        if not isinstance(values, list):
            raise GridError(f"{where} = {values!r}: must be a list of values")
        if not values:
            raise GridError(f"{where}: empty list (an axis needs at least one value)")
        for value in values:
            _check_scalar(value, where)
        if len({json.dumps(v) for v in values}) != len(values):
            raise GridError(f"{where}: repeated value")
        axes.append((key, tuple(values)))
    return tuple(axes)


def _flatten(table: Mapping[str, Any], where: str,
             sections: Mapping[str, Any] = SECTIONS) -> dict[str, Any]:
    """``{"model.d_model": 8}`` and ``{"model": {"d_model": 8}}`` -> ``{"model.d_model": 8}``."""
    out: dict[str, Any] = {}
    for key, value in table.items():
        if "." in key:
            items = [(key, value)]
        elif isinstance(value, Mapping):
            items = [(f"{key}.{k}", v) for k, v in value.items()]
        elif key in TOP_LEVEL_KEYS:
            raise GridError(f"{where}: {key!r} inside a table: top-level keys such as {key} must "
                            "come before the first [table]")
        else:
            raise GridError(f"{where}: key {key!r} must be section.key (e.g. \"model.d_model\")")
        for full, v in items:
            section, _, name = full.partition(".")
            if section not in sections:
                raise GridError(f"{where}: unknown config section {section!r} in {full!r}: "
                                "allowed are " + ", ".join(sections))
            known = {f.name for f in fields(sections[section])}
            if name not in known:
                raise GridError(f"{where}: unknown config key {full}: allowed are "
                                + ", ".join(sorted(known)))
            if full in out:
                raise GridError(f"{where}: {full} given twice")
            out[full] = v
    return out


def _check_scalar(value: Any, where: str) -> None:
    if not isinstance(value, (bool, int, float, str)):
        raise GridError(f"{where} = {value!r}: must be a number, true/false or a string")
