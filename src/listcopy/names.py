"""Model names, both ways: a config's name, and the settings a name stands for.

Two formats, each with an optional task kind in front (``sort_...``) and, when parsing, anything
after the parts below ignored (a time stamp, ``_acc0.9962``):

    seed style     3layer_100dig_8d[_3len][_mask][_l0mask][_nodupes|_traindupes]
                   the seed's names (and the paper's ``2layer_100dig_64d``); listcopy adds the list
                   length when it is not 2, and for a run with only one of the research line's two
                   switches ``_mask`` (MASK token, no layer-0 mask) or ``_l0mask`` (layer-0 mask, SEP
                   at the outputs); a name with neither says nothing about them (the paper's
                   checkpoints carry the line's variant under seed-style names)
    the line's     L3_H1_D64_V100[_len3-ln-bias-wv-wo-nodupes|traindupes]
                   layers, heads, d_model, digits (V is n_digits, as the line's train.py writes it),
                   then flags joined by "-" (its train.py puts ``len{L}`` first; flags may also come
                   as separate parts); always the line's variant (MASK token and layer-0 mask); a
                   flag that is absent means the line's default (frozen identity W_V / W_O, no bias,
                   no LayerNorm)

A name without a length says nothing about it (in either format): a checkpoint's tensors give it
(W_pos), a new config takes the default (2), as the line's own loader does.

listcopy names a config with both switches in the line's format and every other config in the
seed's, so ``parse_model_name(model_name(c))`` gives back the task and model keys a name carries.
"""

from __future__ import annotations

import re
from typing import Any

from .config import TASK_KINDS, Config, ConfigError

_KIND = "(?:(" + "|".join(TASK_KINDS) + ")_)?"
_SEED = re.compile(_KIND + r"(\d+)layer_(\d+)dig_(\d+)d((?:_.*)?)")
_LINE = re.compile(_KIND + r"L(\d+)_H(\d+)_D(\d+)_V(\d+)((?:_.*)?)")
_SEED_FLAGS = {"mask": ("task", "mask_token"), "l0mask": ("model", "layer0_mask"),
               "nodupes": ("task", "no_dupes"), "traindupes": ("task", "train_dupes_only")}
_LINE_FLAGS = {"ln": ("model", "ln", True), "bias": ("model", "use_bias", True),
               "wv": ("model", "freeze_wv", False), "wo": ("model", "freeze_wo", False),
               "nodupes": ("task", "no_dupes", True), "traindupes": ("task", "train_dupes_only", True)}


def is_line_variant(config: Config) -> bool:
    """Both of the research line's switches: named in its format."""
    return config.task.mask_token and config.model.layer0_mask


def model_name(config: Config) -> str:
    """``3layer_100dig_8d`` for the seed's variant, ``L2_H1_D64_V100`` for the line's (module doc)."""
    t, m = config.task, config.model
    kind = "" if t.kind == "copy" else f"{t.kind}_"
    dupes = ["nodupes"] if t.no_dupes else ["traindupes"] if t.train_dupes_only else []
    if is_line_variant(config):
        flags = [f"len{t.list_len}"] if t.list_len != 2 else []
        flags += [f for f, on in (("ln", m.ln), ("bias", m.use_bias), ("wv", not m.freeze_wv),
                                  ("wo", not m.freeze_wo)) if on]
        flags += dupes
        tail = "_" + "-".join(flags) if flags else ""
        return f"{kind}L{m.n_layers}_H{m.n_heads}_D{m.d_model}_V{t.n_digits}{tail}"
    name = f"{kind}{m.n_layers}layer_{t.n_digits}dig_{m.d_model}d"
    if t.list_len != 2:
        name += f"_{t.list_len}len"
    switches = [s for s, on in (("mask", t.mask_token), ("l0mask", m.layer0_mask)) if on]
    return "_".join([name, *switches, *dupes])


def parse_model_name(name: str) -> dict[str, dict[str, Any]]:
    """The settings a name stands for, as ``{"task": {...}, "model": {...}}``; ``ConfigError`` if
    it is in neither format (or names an MLP: listcopy's models are attention-only)."""
    settings = name_settings(name)
    if settings is None:
        raise ConfigError(f"{name!r} is not a model name like 3layer_100dig_8d or L2_H1_D64_V100")
    return settings


def name_settings(name: str) -> dict[str, dict[str, Any]] | None:
    """:func:`parse_model_name`, but None for a name in neither format (a name that says MLP is
    still a ``ConfigError``)."""
    match = _LINE.fullmatch(name)
    if match:
        kind, layers, heads, d_model, digits, tail = match.groups()
        out = _base(kind, layers, digits, d_model)
        out["model"].update(n_heads=int(heads), ln=False, use_bias=False, freeze_wv=True,
                            freeze_wo=True, layer0_mask=True)
        out["task"]["mask_token"] = True
        _line_flags(name, tail, out)
        return out
    match = _SEED.fullmatch(name)
    if match:
        kind, layers, digits, d_model, tail = match.groups()
        out = _base(kind, layers, digits, d_model)
        _seed_flags(tail, out)
        return out
    return None


def _base(kind: str | None, layers: str, digits: str, d_model: str) -> dict[str, dict[str, Any]]:
    task: dict[str, Any] = {"n_digits": int(digits)}  # list_len: only where a flag says it
    if kind:
        task["kind"] = kind
    return {"task": task, "model": {"n_layers": int(layers), "d_model": int(d_model)}}


def _parts(tail: str) -> list[str]:
    return tail[1:].split("_") if tail else []


def _seed_flags(tail: str, out: dict[str, dict[str, Any]]) -> None:
    """``_3len``, ``_mask``, ``_l0mask``, ``_nodupes``, ``_traindupes``, in any order, up to the
    first other part. Either switch present states both."""
    found: set[str] = set()
    for part in _parts(tail):
        length = re.fullmatch(r"(\d+)len", part)
        if length:
            out["task"]["list_len"] = int(length.group(1))
        elif part in _SEED_FLAGS:
            found.add(part)
        else:
            break
    for flag in found:
        section, key = _SEED_FLAGS[flag]
        out[section][key] = True
    if found & {"mask", "l0mask"}:
        out["task"]["mask_token"] = "mask" in found
        out["model"]["layer0_mask"] = "l0mask" in found


def _line_flags(name: str, tail: str, out: dict[str, dict[str, Any]]) -> None:
    """Parts made only of the line's flags (``len3``, ``ln-bias``, ``len3-wv``), up to the first
    other part."""
    for part in _parts(tail):
        flags = part.split("-")
        if not all(f in _LINE_FLAGS or f == "mlp" or re.fullmatch(r"len\d+", f) for f in flags):
            break
        for flag in flags:
            if flag == "mlp":
                raise ConfigError(f"{name!r} names a model with MLP layers: listcopy's models"
                                  " are attention-only")
            if flag.startswith("len"):
                out["task"]["list_len"] = int(flag[3:])
                continue
            section, key, value = _LINE_FLAGS[flag]
            out[section][key] = value
