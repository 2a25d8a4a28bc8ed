"""Configuration: frozen dataclasses split by concern, validated once at construction.

    Config
      task:  TaskConfig   what is learned (digits, list length, split)
      model: ModelConfig  the attention-only transformer's shape and constraints
      train: TrainConfig  optimiser, schedule, early stop, seed, device

Values come from the defaults, a TOML file (``[task]``, ``[model]``, ``[train]`` tables) and
``section.key=value`` overrides, in that order. Every problem is raised as one ``ConfigError``
whose message names the key and what is allowed. Nothing here imports torch.

Also here, each in one place: the dotted-key view of a config (``Config.flat`` /
``Config.from_flat``, ``short_key``, ``dotted_key``), what configs must share to train as one ensemble (``ensemble_key``,
``check_ensemble``), the seed-range syntax (``parse_seeds``); model names live in names.py.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import re
import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Mapping, Sequence

from .errors import BadInput, one_line, shown


class ConfigError(BadInput):
    """A configuration value, key or file that cannot be used (exit 2). The message is one line."""


def _check(ok: bool, key: str, value: Any, allowed: str) -> None:
    if not ok:
        raise ConfigError(f"{key} = {value!r}: must be {allowed}")


@functools.cache
def _kinds(cls: type) -> tuple[tuple[str, str], ...]:
    """A section's fields and their types' names, in order (read once per class)."""
    return tuple((f.name, f.type if isinstance(f.type, str) else f.type.__name__)
                 for f in fields(cls))


def _check_types(obj: Any, section: str) -> None:
    """Refuse values whose type does not match the field (bools are not ints, ints are floats)."""
    for name, kind in _kinds(type(obj)):
        value = getattr(obj, name)
        key = f"{section}.{name}"
        if kind == "bool":
            _check(isinstance(value, bool), key, value, "true or false")
        elif kind == "int":
            _check(isinstance(value, int) and not isinstance(value, bool), key, value, "an integer")
        elif kind == "float":
            ok = isinstance(value, (int, float)) and not isinstance(value, bool)
            _check(ok and math.isfinite(value), key, value, "a finite number")
        elif kind == "str":
            _check(isinstance(value, str), key, value, "a string")


TASK_KINDS = ("copy", "reverse", "sort")
MAX_SEED = 2**63 - 1  # torch generators and SQLite take 64-bit seeds
ENUMERATE_LIMIT = 10**6  # at most this many lists: all of them; more: a seeded sample of n_samples


@dataclass(frozen=True)
class TaskConfig:
    n_digits: int = 100
    list_len: int = 2
    train_frac: float = 0.8
    split_seed: int = 0
    kind: str = "copy"
    n_samples: int = 100_000
    mask_token: bool = False  # the research line: outputs' input positions hold MASK, not SEP
    no_dupes: bool = False  # the line's get_dataset: no list whose elements are all equal
    train_dupes_only: bool = False  # ... or those lists only in training

    def __post_init__(self) -> None:
        _check_types(self, "task")
        _check(self.n_digits >= 2, "task.n_digits", self.n_digits, "an integer >= 2")
        _check(self.list_len >= 1, "task.list_len", self.list_len, "an integer >= 1")
        _check(self.list_len <= 64, "task.list_len", self.list_len, "at most 64")
        _check(0 < self.train_frac < 1, "task.train_frac", self.train_frac, "in (0, 1)")
        _check(self.split_seed >= 0, "task.split_seed", self.split_seed, "an integer >= 0")
        _check(self.split_seed <= MAX_SEED, "task.split_seed", self.split_seed, "at most 2**63 - 1")
        _check(self.kind in TASK_KINDS, "task.kind", self.kind, "one of " + ", ".join(TASK_KINDS))
        _check(2 <= self.n_samples <= ENUMERATE_LIMIT, "task.n_samples", self.n_samples,
               f"an integer in [2, {ENUMERATE_LIMIT}]")
        self._check_dupes()
        _check(1 <= self.n_train < self.n_lists, "task.train_frac", self.train_frac,
               f"such that both splits of {self.n_lists} lists are non-empty")

    def _check_dupes(self) -> None:
        if not (self.no_dupes or self.train_dupes_only):
            return
        _check(not (self.no_dupes and self.train_dupes_only), "task.train_dupes_only",
               self.train_dupes_only, "false when task.no_dupes is true (one or the other)")
        key = "task.no_dupes" if self.no_dupes else "task.train_dupes_only"
        _check(self.list_len >= 2, key, True, "false for lists of one digit (all are dupes)")
        _check(not self.sampled, key, True,
               f"false when lists are sampled (n_digits ** list_len > {ENUMERATE_LIMIT})")

    @property
    def sampled(self) -> bool:
        """True when there are too many lists to enumerate: a seeded sample of n_samples is used."""
        return self.n_data > ENUMERATE_LIMIT

    @property
    def n_lists(self) -> int:
        """How many lists the dataset holds (all of them, the non-dupes, or the sample)."""
        if self.sampled:
            return min(self.n_samples, self.n_data)
        return self.n_data - self.n_dupes if self.no_dupes else self.n_data

    @property
    def n_dupes(self) -> int:
        """Lists whose elements are all equal (one per digit)."""
        return self.n_digits

    @property
    def seq_len(self) -> int:
        """[d1 .. dL, SEP, o1 .. oL]"""
        return 2 * self.list_len + 1

    @property
    def sep(self) -> int:
        """SEP: n_digits (the seed), n_digits + 1 with a MASK token (the research line)."""
        return self.n_digits + 1 if self.mask_token else self.n_digits

    @property
    def mask_id(self) -> int | None:
        """MASK (n_digits) with ``mask_token``, else None."""
        return self.n_digits if self.mask_token else None

    @property
    def fill(self) -> int:
        """The token the inputs hold at the output positions: MASK, or SEP in the seed."""
        return self.n_digits if self.mask_token else self.sep

    @property
    def vocab(self) -> int:
        return self.n_digits + (2 if self.mask_token else 1)

    @property
    def n_data(self) -> int:
        """How many distinct lists exist."""
        return self.n_digits**self.list_len

    @property
    def n_split(self) -> int:
        """How many lists the split's ``randperm`` shuffles: every list, or with either dupes
        option the non-dupes (the line's get_dataset)."""
        if self.train_dupes_only:
            return self.n_data - self.n_dupes
        return self.n_lists

    @property
    def n_train(self) -> int:
        """The seed's ``int(TRAIN_SPLIT * n_data)``, plus every dupe with ``train_dupes_only``."""
        n = int(self.train_frac * self.n_split)
        return n + self.n_dupes if self.train_dupes_only else n

    @property
    def n_val(self) -> int:
        return self.n_split - int(self.train_frac * self.n_split)

    @property
    def output_slice(self) -> slice:
        return slice(self.list_len + 1, self.seq_len)


@dataclass(frozen=True)
class ModelConfig:
    n_layers: int = 3
    n_heads: int = 1
    d_model: int = 8
    ln: bool = False
    use_bias: bool = False
    freeze_wv: bool = True
    freeze_wo: bool = True
    layer0_mask: bool = False  # the research line: in layer 0 outputs attend to nothing

    def __post_init__(self) -> None:
        _check_types(self, "model")
        _check(self.n_layers >= 1, "model.n_layers", self.n_layers, "an integer >= 1")
        _check(self.n_heads >= 1, "model.n_heads", self.n_heads, "an integer >= 1")
        _check(self.d_model >= 1, "model.d_model", self.d_model, "an integer >= 1")
        _check(self.d_model % self.n_heads == 0, "model.d_model", self.d_model,
               f"divisible by model.n_heads = {self.n_heads}")

    @property
    def d_head(self) -> int:
        return self.d_model // self.n_heads

    @property
    def init_std(self) -> float:
        """TransformerLens' default initializer_range for "gpt2" init."""
        return 0.8 / math.sqrt(self.d_model)


DEVICES = ("auto", "cpu", "cuda", "mps")
LR_SCHEDULES = ("constant", "warmup_cosine")  # the seed's; the line's LambdaLR (schedule.py)


@dataclass(frozen=True)
class TrainConfig:
    lr: float = 1e-3
    weight_decay: float = 0.01
    batch_size: int = 128
    max_steps: int = 300_000
    eval_every: int = 100
    early_stop_acc: float = 0.999
    checkpoint_every: int = 50_000
    seed: int = 0
    device: str = "auto"
    reshuffle: bool = False
    # the research line's recipe (train.py); each off by default, so the seed's runs are unchanged
    lr_schedule: str = "constant"
    warmup_steps: int = 1000  # warmup_cosine only: the line's --warmup-steps
    max_grad_norm: float = 0.0  # clip_grad_norm_ over a member's trainable parameters; 0 = off
    patience: int = 0  # evaluations without improvement before stopping; 0 = off
    patience_threshold: float = 0.9  # ... only when the accuracy is at least this
    fresh_data: bool = False  # new training lists every step, never a validation list

    def __post_init__(self) -> None:
        _check_types(self, "train")
        _check(self.lr > 0, "train.lr", self.lr, "> 0")
        _check(self.weight_decay >= 0, "train.weight_decay", self.weight_decay, ">= 0")
        _check(self.batch_size >= 1, "train.batch_size", self.batch_size, "an integer >= 1")
        _check(self.max_steps >= 1, "train.max_steps", self.max_steps, "an integer >= 1")
        _check(self.eval_every >= 1, "train.eval_every", self.eval_every, "an integer >= 1")
        _check(0 < self.early_stop_acc <= 1, "train.early_stop_acc", self.early_stop_acc, "in (0, 1]")
        _check(self.checkpoint_every >= 1, "train.checkpoint_every", self.checkpoint_every,
               "an integer >= 1")
        _check(self.seed >= 0, "train.seed", self.seed, "an integer >= 0")
        _check(self.seed <= MAX_SEED, "train.seed", self.seed, "at most 2**63 - 1")
        _check(re.fullmatch(r"auto|cpu|mps|cuda(:[0-9]+)?", self.device) is not None,
               "train.device", self.device, "one of " + ", ".join(DEVICES) + " or cuda:N")
        self._check_recipe()

    def _check_recipe(self) -> None:
        _check(self.lr_schedule in LR_SCHEDULES, "train.lr_schedule", self.lr_schedule,
               "one of " + ", ".join(LR_SCHEDULES))
        _check(self.warmup_steps >= 0, "train.warmup_steps", self.warmup_steps, "an integer >= 0")
        _check(self.max_grad_norm >= 0, "train.max_grad_norm", self.max_grad_norm,
               ">= 0 (0 = no clipping)")
        _check(self.patience >= 0, "train.patience", self.patience, "an integer >= 0 (0 = off)")
        _check(0 <= self.patience_threshold <= 1, "train.patience_threshold",
               self.patience_threshold, "in [0, 1]")
        _check(not (self.fresh_data and self.reshuffle), "train.fresh_data", self.fresh_data,
               "false when train.reshuffle is true (fresh lists have no epochs to reshuffle)")

    def with_seed(self, seed: int) -> "TrainConfig":
        """This config with another ``seed``, checking only the seed (the rest is valid already):
        what a grid's seeds make of every entry, a million times if need be."""
        _check(isinstance(seed, int) and not isinstance(seed, bool), "train.seed", seed,
               "an integer")
        _check(seed >= 0, "train.seed", seed, "an integer >= 0")
        _check(seed <= MAX_SEED, "train.seed", seed, "at most 2**63 - 1")
        new = object.__new__(TrainConfig)
        new.__dict__.update(self.__dict__, seed=seed)  # frozen: set once, before anyone sees it
        return new


# Train settings every member of one ensemble (one vectorised training group) must share;
# the others (seed, lr, weight_decay, early_stop_acc, max_steps, the schedule, clipping,
# patience) may differ per member.
SHARED_TRAIN_KEYS = ("batch_size", "eval_every", "checkpoint_every", "device", "reshuffle",
                     "fresh_data")

SECTIONS: dict[str, type] = {"task": TaskConfig, "model": ModelConfig, "train": TrainConfig}


@dataclass(frozen=True)
class Config:
    task: TaskConfig = field(default_factory=TaskConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    @property
    def batch_size(self) -> int:
        """The batch actually used: the seed's ``min(128, len(train_ds))``."""
        return min(self.train.batch_size, self.task.n_train)

    # ---- dict round trip -------------------------------------------------------------------
    def to_dict(self) -> dict[str, dict[str, Any]]:
        out = {}
        for name, cls in SECTIONS.items():
            section = getattr(self, name)
            out[name] = {key: getattr(section, key) for key, _ in _kinds(cls)}
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], base: "Config | None" = None) -> "Config":
        """Build from ``{"task": {...}, ...}``; missing keys keep ``base``'s (default) values."""
        base = base or cls()
        if not isinstance(data, Mapping):
            raise ConfigError(f"config must be a table of sections, got {type(data).__name__}")
        unknown = sorted(set(data) - set(SECTIONS))
        if unknown:
            raise ConfigError(f"unknown config section {unknown[0]!r}: allowed are "
                              + ", ".join(SECTIONS))
        parts = {}
        for name, section_cls in SECTIONS.items():
            values = data.get(name, {})
            if not isinstance(values, Mapping):
                raise ConfigError(f"config section {name!r} must be a table")
            known = [key for key, _ in _kinds(section_cls)]
            for key in values:
                if key not in known:
                    raise ConfigError(f"unknown config key {name}.{shown(str(key))}: allowed are "
                                      + ", ".join(sorted(known)))
            # a section given no values is the base's, already validated
            parts[name] = (dataclasses.replace(getattr(base, name), **dict(values)) if values
                           else getattr(base, name))
        return cls(**parts)

    def override(self, assignments: Sequence[str]) -> "Config":
        """Apply ``section.key=value`` strings (values in TOML syntax; bare words are strings)."""
        return Config.from_dict(parse_overrides(assignments), base=self)

    def flat(self) -> dict[str, Any]:
        """Every setting under its dotted key, in section then field order:
        ``{"task.n_digits": 100, ..., "train.reshuffle": False}``."""
        return {f"{section}.{key}": value for section, table in self.to_dict().items()
                for key, value in table.items()}

    @classmethod
    def from_flat(cls, settings: Mapping[str, Any], base: "Config | None" = None) -> "Config":
        """The inverse of ``flat``: ``{"model.d_model": 16}`` -> a validated Config; missing keys keep
        ``base``'s (default) values."""
        nested: dict[str, dict[str, Any]] = {}
        for key, value in settings.items():
            section, dot, name = key.partition(".")
            if not dot or not name:
                raise ConfigError(f"setting {key!r} must look like section.key")
            nested.setdefault(section, {})[name] = value
        return cls.from_dict(nested, base=base)

    def replace(self, **sections: Mapping[str, Any]) -> "Config":
        """``config.replace(model={"d_model": 16})``: a validated copy with some keys changed."""
        return Config.from_dict(sections, base=self)

    @property
    def name(self) -> str:
        return model_name(self)


def short_key(key: str) -> str:
    """``model.d_model`` -> ``d_model``."""
    return key.split(".", 1)[1] if "." in key else key


def dotted_key(name: str, what: str, hint: str, keys: Sequence[str] = ()) -> str:
    """The dotted key of a setting named by it or by its short name (``d_model``) where that is
    unambiguous; else a ``ConfigError`` that starts with ``what`` (the option) and ends with
    ``hint`` (what to use instead). ``keys``: the settings to choose from (default a Config's)."""
    keys = list(keys) or list(Config().flat())
    if name in keys:
        return name
    matches = [k for k in keys if short_key(k) == name]
    if len(matches) == 1:
        return matches[0]
    if matches:
        raise ConfigError(f"{what} {name!r} is ambiguous: use one of {', '.join(matches)}")
    raise ConfigError(f"{what} {name!r}: not a setting; {hint}")


# ---- what one ensemble shares ----------------------------------------------------------------

def _shared(config: Config) -> dict[str, Any]:
    return {k: v for k, v in config.flat().items()
            if not k.startswith("train.") or k[len("train."):] in SHARED_TRAIN_KEYS}


def ensemble_key(config: Config) -> str:
    """What configs trained together as one ensemble must share, as canonical JSON: the task, the
    model and the train settings of ``SHARED_TRAIN_KEYS``. Configs with equal keys can."""
    return json.dumps(_shared(config), sort_keys=True)


def ensemble_keys(configs: Sequence[Config]) -> list[str]:
    """``ensemble_key`` of each config, computed once per distinct task, model and shared train
    values (the configs of a grid share their task and model objects by the thousand)."""
    memo: dict[tuple, str] = {}
    out = []
    for c in configs:
        shared = tuple((type(v), v) for v in (getattr(c.train, k) for k in SHARED_TRAIN_KEYS))
        k = (id(c.task), id(c.model), shared)
        if k not in memo:
            memo[k] = ensemble_key(c)
        out.append(memo[k])
    return out


def check_ensemble(configs: Sequence[Config]) -> None:
    """``ConfigError`` naming the first setting in which a config differs from the first one
    (compared by ``ensemble_keys``: once per distinct task, model and shared train values)."""
    keys = ensemble_keys(configs)
    first = _shared(configs[0])
    for config, key in zip(configs[1:], keys[1:]):
        if key == keys[0]:
            continue
        other = _shared(config)
        differ = [k for k in first if first[k] != other[k]]
        if differ:
            k = differ[0]
            raise ConfigError(f"ensemble members must share {k} (the task and model sections and "
                              f"train.{', train.'.join(SHARED_TRAIN_KEYS)}): {first[k]!r} and"
                              f" {other[k]!r} differ")


# ---- seed ranges ---------------------------------------------------------------------------------

MAX_SEEDS = 100_000
_SEED_PART = re.compile(r"\s*([0-9]+)\s*(?:-\s*([0-9]+)\s*)?")


def parse_seeds(raw: str | int | Sequence[int], what: str = "seeds",
                limit: int | None = MAX_SEEDS) -> tuple[int, ...]:
    """Many seeds, as ``listcopy train --seeds`` and a grid file's ``seeds`` give them, in the
    order given.

    A string holds comma-separated parts, each a seed ``N`` or an inclusive range ``N-M`` with
    ``N <= M`` (decimal integers >= 0; spaces around numbers, dashes and commas are ignored):
    ``"0-63"``, ``"0,3,7"``, ``"0-3,8"``. A grid file may also give one integer or an array of
    them. Refused with one ``ConfigError`` line, starting with ``what`` and the value: an empty or
    malformed part, a range that runs backwards, no seed at all, a seed given twice, more than
    ``limit`` seeds (a policy limit, ``None`` with ``--allow-large``; the count is taken before
    any range is expanded, and beyond the limit it must still fit in memory).
    """
    def bad(problem: str) -> ConfigError:
        return ConfigError(f"{what} {raw!r}: {problem}")

    if isinstance(raw, str):
        spans = _seed_ranges(raw, bad)
    elif isinstance(raw, int) and not isinstance(raw, bool):
        spans = [(raw, raw)]
    elif isinstance(raw, (list, tuple)):
        for s in raw:
            if isinstance(s, bool) or not isinstance(s, int):
                raise bad(f"{s!r} is not an integer >= 0")
        spans = [(s, s) for s in raw]
    else:
        raise bad('must be a range like "0-63" or a list of integers')
    for lo, _ in spans:
        if lo < 0:
            raise bad(f"{lo!r} is not an integer >= 0")
    count = sum(hi - lo + 1 for lo, hi in spans)
    if not count:
        raise bad("no seeds (give at least one)")
    if limit is not None and count > limit:
        raise bad(f"at most {limit:,} seeds (--allow-large for more)")
    if limit is None:
        from .resources import SEED_BYTES, check_count_memory

        check_count_memory(f"{what} {_short(raw)}", count, SEED_BYTES)
    seeds = [s for lo, hi in spans for s in range(lo, hi + 1)]
    seen: set[int] = set()
    for s in seeds:
        if s in seen:
            raise bad(f"seed {s} repeated")
        seen.add(s)
    return tuple(seeds)


def _short(raw: Any, limit: int = 60) -> str:
    text = repr(raw)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _seed_ranges(text: str, bad) -> list[tuple[int, int]]:
    """``"0-3,8"`` -> [(0, 3), (8, 8)], not expanded."""
    spans = []
    for part in text.split(","):
        match = _SEED_PART.fullmatch(part)
        if not match:
            raise bad('use a range like "0-63", a list like "0,3,7" or both ("0-3,8")')
        lo = int(match.group(1))
        hi = int(match.group(2)) if match.group(2) is not None else lo
        if hi < lo:
            raise bad(f"range {part.strip()} is empty")
        spans.append((lo, hi))
    return spans


# ---- overrides and files -------------------------------------------------------------------

def parse_value(text: str) -> Any:
    """A TOML value (``8``, ``1e-3``, ``true``, ``"cpu"``); a bare word is taken as a string."""
    text = text.strip()
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        if re.fullmatch(r"[A-Za-z_][\w:.\-]*", text):
            return text
        raise ConfigError(f"cannot parse value {_short(text)}") from None
    except RecursionError:
        raise ConfigError(f"cannot parse value {_short(text)}: nested too deeply") from None


def parse_overrides(assignments: Sequence[str]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for item in assignments:
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or not re.fullmatch(r"[a-z_]+\.[a-z_0-9]+", key):
            raise ConfigError(f"override {item!r} must look like section.key=value")
        section, name = key.split(".")
        if section not in SECTIONS:
            raise ConfigError(f"unknown config section {section!r} in {item!r}: allowed are "
                              + ", ".join(SECTIONS))
        out.setdefault(section, {})[name] = parse_value(value)
    return out


MAX_TOML_BYTES = 16 << 20  # a config or grid file larger than this is not one


def load_toml(path: str | Path) -> dict[str, Any]:
    """A TOML file (a config or a grid) as a dict; at most ``MAX_TOML_BYTES`` are read."""
    return read_toml(path)[0]


def read_toml(path: str | Path) -> tuple[dict[str, Any], bytes]:
    """A TOML file's tables and the bytes read (read once: ``/dev/stdin`` cannot be read twice);
    at most ``MAX_TOML_BYTES``."""
    path = Path(path)
    try:
        with path.open("rb") as fh:
            raw = fh.read(MAX_TOML_BYTES + 1)
        if len(raw) > MAX_TOML_BYTES:
            raise ConfigError(f"{path}: larger than {MAX_TOML_BYTES >> 20} MiB, not a config file")
        return tomllib.loads(raw.decode("utf-8")), raw
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found") from None
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"{path}: invalid TOML: {err}") from None
    except RecursionError:
        raise ConfigError(f"{path}: invalid TOML: nested too deeply") from None
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError(f"{path}: cannot read: {one_line(err)}") from None


def load_config(path: str | Path | None = None, overrides: Sequence[str] = (),
                base: Config | None = None) -> Config:
    """Defaults (or ``base``), then the TOML file at ``path``, then ``overrides``."""
    config = base or Config()
    if path is not None:
        try:
            config = Config.from_dict(load_toml(path), base=config)
        except ConfigError as err:
            msg = str(err)
            raise ConfigError(msg if msg.startswith(str(path)) else f"{path}: {msg}") from None
    return config.override(overrides)


# ---- model names: names.py (imported here, where callers have always found them) --------------

from .names import model_name, parse_model_name  # noqa: E402,F401  (names.py imports this module)
