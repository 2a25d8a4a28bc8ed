"""A checkpoint file's configuration, inferred: its tensors first, its name second, ``--set`` last.

A ``.pt`` state dict (the seed's, the research line's, listcopy's export) carries no config (a
safetensors export does, in its header: checkpoint.header_config; this module is for the rest). Its
tensors say most of it:

    embed.W_E (V, D)            vocab V, d_model D
    pos_embed.W_pos (T, D)      list_len = (T - 1) / 2 (T must be odd)
    blocks.L.attn.W_Q (H, D, d) layers (how many blocks), heads H (d must be D / H)
    W_V / W_O identity slices   frozen (model.freeze_wv / freeze_wo)
    non-zero b_*                model.use_bias;   ln1 / ln_final keys: model.ln
    any .mlp. key               refused: listcopy's models are attention-only

The name (names.py) says the rest: n_digits, so vocab - n_digits = 1 is the seed's variant (SEP
at the outputs) and 2 the research line's (a MASK token, and by default the layer-0 mask, which the
line always used), and whatever else it carries (the task kind, dupes options). ``--set`` settles
what neither says and overrides both. Without a usable name, the default n_digits (100) is taken
where it fits the vocab (V = 101 or 102, the seed's and the line's own sizes); any other vocab is
ambiguous. A conflict (an even n_ctx, a vocab that fits no variant, a name that contradicts the
tensors) is one ``CheckpointError`` line naming the file.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import torch
from torch import Tensor

from .checkpoint import CheckpointError
from .config import Config, ConfigError, TaskConfig, load_config, parse_overrides
from .model import identity_weight
from .names import name_settings

_BLOCK = re.compile(r"blocks\.(\d+)\.")


@dataclass(frozen=True)
class Inferred:
    """The config a checkpoint file is loaded with, and one line saying where it came from."""

    config: Config
    notice: str


@dataclass(frozen=True)
class TensorFacts:
    """What the tensors of a state dict say."""

    vocab: int
    settings: dict[str, Any]  # dotted key -> value

    def describe(self) -> str:
        s = self.settings
        heads = s["model.n_heads"]
        frozen = [w for w, key in (("W_V", "model.freeze_wv"), ("W_O", "model.freeze_wo"))
                  if s[key]]
        layers = s["model.n_layers"]
        return (f"{layers} layer{'s' * (layers > 1)}, {heads} head{'s' * (heads > 1)}, d_model "
                f"{s['model.d_model']}, list_len {s['task.list_len']}, vocab {self.vocab}, "
                + (f"identity {'/'.join(frozen)}" if frozen else "learned W_V/W_O")
                + (", biases" if s["model.use_bias"] else ", no bias")
                + (", LayerNorm" if s["model.ln"] else ", no LayerNorm"))


def _tensor(state: Mapping[str, Any], key: str, dims: int, source: str) -> Tensor:
    value = state.get(key)
    if key in state and not isinstance(value, Tensor):
        raise CheckpointError(f"{source}: {key!r} is a {type(value).__name__}, not a tensor")
    if not isinstance(value, Tensor):
        raise CheckpointError(f"{source}: missing tensor {key!r} (not an attention-only"
                              " TransformerLens state dict)")
    if value.dim() != dims:
        raise CheckpointError(f"{source}: {key!r} has shape {tuple(value.shape)}, expected"
                              f" {dims} dimensions")
    return value


def tensor_facts(state: Mapping[str, Any], source: str) -> TensorFacts:
    """Read the configuration the tensors carry (module doc); ``CheckpointError`` where they
    cannot be a listcopy model."""
    mlp = [k for k in state if ".mlp." in k]
    if mlp:
        raise CheckpointError(f"{source}: unexpected tensor {mlp[0]!r}: an MLP, but listcopy's"
                              " models are attention-only")
    W_E = _tensor(state, "embed.W_E", 2, source)
    W_pos = _tensor(state, "pos_embed.W_pos", 2, source)
    W_Q = _tensor(state, "blocks.0.attn.W_Q", 3, source)
    if W_E.shape[0] < 3:
        raise CheckpointError(f"{source}: 'embed.W_E' has shape {tuple(W_E.shape)}: a vocab of "
                              f"{W_E.shape[0]} holds no task (at least 2 digits and SEP)")
    n_ctx = W_pos.shape[0]
    if n_ctx % 2 == 0 or n_ctx < 3:
        raise CheckpointError(f"{source}: 'pos_embed.W_pos' has {n_ctx} positions: no list fits"
                              " (n_ctx = 2 * list_len + 1 must be odd and at least 3)")
    H, D, d = W_Q.shape
    if H * d != D:
        raise CheckpointError(f"{source}: 'blocks.0.attn.W_Q' has shape {tuple(W_Q.shape)}:"
                              f" listcopy needs d_head = d_model / n_heads ({D} / {H})")
    n_layers = 1 + max(int(m.group(1)) for k in state if (m := _BLOCK.match(k)))
    settings = {
        "task.list_len": (n_ctx - 1) // 2, "model.n_layers": n_layers, "model.n_heads": H,
        "model.d_model": D, "model.ln": "blocks.0.ln1.w" in state or "ln_final.w" in state,
        "model.use_bias": any(isinstance(v, Tensor) and v.is_floating_point() and bool(v.any())
                              for k, v in state.items() if k.rsplit(".", 1)[-1].startswith("b_")),
        "model.freeze_wv": _identity(state, "W_V", n_layers, identity_weight("W_V", H, D, d)),
        "model.freeze_wo": _identity(state, "W_O", n_layers, identity_weight("W_O", H, D, d)),
    }
    return TensorFacts(W_E.shape[0], settings)


def _identity(state: Mapping[str, Any], which: str, n_layers: int, eye: Tensor) -> bool:
    """Every layer's ``which`` is the identity slice (a missing one counts as frozen: the state
    dict check names it)."""
    for i in range(n_layers):
        W = state.get(f"blocks.{i}.attn.{which}")
        if isinstance(W, Tensor) and not (W.shape == eye.shape and torch.equal(W.float(), eye)):
            return False
    return True


def infer_config(state: Mapping[str, Any], stem: str, source: str,
                 overrides: tuple[str, ...] | list[str] = ()) -> Inferred:
    """The config of the state dict ``state`` from the file ``source`` named ``stem`` (module doc)."""
    facts = tensor_facts(state, source)
    try:
        named = _flat(name_settings(stem) or {})
        sets = _flat(parse_overrides(overrides))
    except ConfigError as err:
        raise CheckpointError(f"{source}: {err}") from None
    _check_name(facts, named, sets, source)
    variant, said = _variant(facts, named, sets, source)
    flat = {**facts.settings, **named, **variant}
    try:
        base = Config.from_flat(flat)
        config = load_config(None, overrides, base=base)
    except ConfigError as err:
        raise CheckpointError(f"{source}: {err}") from None
    notice = f"{source}: {config.name} - tensors: {facts.describe()}; {said}"
    if not named and "task.kind" not in sets:
        notice += f"; task.kind {config.task.kind} (the name says nothing: --set task.kind=...)"
    if overrides:
        notice += "; --set " + " ".join(overrides)
    return Inferred(config, notice)


def settings_lost(state: Mapping[str, Any], config: Config, path: str) -> list[str]:
    """The ``--set`` assignments the file ``path`` holding ``state`` needs to load back as
    ``config`` (its tensors and its name say the rest); empty when it loads back as it is."""
    stem = Path(path).stem
    sets: list[str] = []
    try:
        back = infer_config(state, stem, path).config
    except CheckpointError:  # a vocab the name does not settle: the digits do
        sets = [f"task.n_digits={config.task.n_digits}"]
        back = infer_config(state, stem, path, sets).config
    want, got = config.to_dict(), back.to_dict()
    return sets + [f"{section}.{key}={_toml(value)}" for section in ("task", "model")
                   for key, value in want[section].items() if got[section][key] != value]


def _flat(nested: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    return {f"{section}.{key}": value for section, table in nested.items()
            for key, value in table.items()}


# what the tensors say of these settings where both values fit them (zeros, identities)
_FITS_EITHER = {("model.use_bias", False), ("model.freeze_wv", True), ("model.freeze_wo", True)}


def _check_name(facts: TensorFacts, named: dict[str, Any], sets: dict[str, Any],
                source: str) -> None:
    """A name that contradicts the tensors (where ``--set`` does not settle it) is refused. Zero
    biases and identity W_V / W_O fit either setting (an untrained ``bias`` / ``wv`` model holds
    them): there the name says what the tensors cannot."""
    for key, value in facts.settings.items():
        if key not in named or key in sets or named[key] == value:
            continue
        if (key, value) in _FITS_EITHER:
            continue
        said = named[key]
        if key == "model.n_layers":
            block = min(said, value)
            which = "unexpected" if value > said else "missing"
            raise CheckpointError(f"{source}: {which} tensor 'blocks.{block}.attn.W_Q': the name"
                                  f" says {said} layers, the tensors hold {value}")
        raise CheckpointError(f"{source}: the name says {key} = {_toml(said)}, the tensors"
                              f" {_toml(value)}")


def _toml(value: Any) -> str:
    return str(value).lower() if isinstance(value, bool) else str(value)


def _variant(facts: TensorFacts, named: dict[str, Any], sets: dict[str, Any],
             source: str) -> tuple[dict[str, Any], str]:
    """n_digits, mask_token and layer0_mask from the vocab, the name and ``--set`` (module doc),
    and a few words on where they came from."""
    V = facts.vocab
    shape = f"'embed.W_E' has shape ({V}, {facts.settings['model.d_model']})"
    n, whence = sets.get("task.n_digits"), "--set"
    if n is None:
        n, whence = named.get("task.n_digits"), "name"
    mask = sets.get("task.mask_token", named.get("task.mask_token"))
    if n is None and isinstance(mask, bool):
        n, whence = V - 1 - mask, "vocab and task.mask_token"
    if n is None:
        n, whence = TaskConfig().n_digits, "default (the name says nothing)"
        if V - n not in (1, 2):
            raise CheckpointError(
                f"{source}: {shape}: a vocab of {V} is {V - 1} digits with SEP (the seed's) or"
                f" {V - 2} with MASK and SEP (the research line's), and the file name does not"
                " say which: --set task.n_digits=N settles it (and task.kind=reverse or sort,"
                " model.layer0_mask=false for MASK without the line's layer-0 mask, where so)")
    if not isinstance(n, int) or isinstance(n, bool):
        return {}, "n_digits from --set"  # Config refuses it with its own message
    if mask is None:
        if V - n not in (1, 2):
            raise CheckpointError(f"{source}: {shape}: a vocab of {V} fits no variant of {n}"
                                  f" digits ({n + 1} with SEP, {n + 2} with MASK and SEP)")
        mask = V - n == 2
    elif V - n != 1 + bool(mask):
        raise CheckpointError(f"{source}: {shape}: {n} digits {'with' if mask else 'without'} a"
                              f" MASK token need a vocab of {n + 1 + bool(mask)}")
    l0 = sets.get("model.layer0_mask", named.get("model.layer0_mask", mask))
    said = f"{whence}: {n} digits, " + (f"MASK {n} and SEP {n + 1}" if mask else f"SEP {n}")
    said += ", layer-0 mask" if l0 is True else ", no layer-0 mask"
    if mask and "model.layer0_mask" not in sets and "model.layer0_mask" not in named:
        said += " (the line's; --set model.layer0_mask=false for none)"
    return {"task.n_digits": n, "task.mask_token": mask, "model.layer0_mask": l0}, said
