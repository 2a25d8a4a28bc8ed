"""What every analysis shares: the seed's metrics under temporary hooks, streaming passes over the
validation set, hook-name helpers and the conversion of results to JSON-ready data.

Hooks are attached only inside :func:`hooked` (TransformerLens' ``hooks()`` context), so no call
here leaves one on the model. Every pass runs in batches (``batch_size`` examples at a time);
statistics over the validation set are accumulated in float64 so that they do not depend on it.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import torch
from torch import Tensor

from ..config import Config, ConfigError
from ..metrics import evaluate
from ..task import Dataset, dataset

BATCH_SIZE = 4096
FwdHook = tuple[str, Callable]


# ---- hook names --------------------------------------------------------------------------------

def resid_pre(layer: int) -> str:
    return f"blocks.{layer}.hook_resid_pre"


def resid_post(layer: int) -> str:
    return f"blocks.{layer}.hook_resid_post"


def pattern_name(layer: int) -> str:
    return f"blocks.{layer}.attn.hook_pattern"


def scores_name(layer: int) -> str:
    return f"blocks.{layer}.attn.hook_attn_scores"


def resid_stages(n_layers: int) -> list[str]:
    """The residual stream after the embedding, then after each layer."""
    return [resid_pre(0)] + [resid_post(layer) for layer in range(n_layers)]


def stage_label(name: str) -> str:
    """``blocks.0.hook_resid_pre`` -> ``embed``; ``blocks.2.hook_resid_post`` -> ``L2``."""
    if name == resid_pre(0):
        return "embed"
    return "L" + name.split(".")[1]


# ---- temporary hooks and passes ----------------------------------------------------------------

@contextlib.contextmanager
def hooked(model: torch.nn.Module, fwd_hooks: Sequence[FwdHook] = ()) -> Iterator[None]:
    """``fwd_hooks`` attached for the block only (none at all if empty)."""
    if not fwd_hooks:
        yield
        return
    with model.hooks(fwd_hooks=list(fwd_hooks)):
        yield


def device_of(model: torch.nn.Module) -> torch.device:
    return next(model.parameters()).device


def batches(inputs: Tensor, batch_size: int = BATCH_SIZE) -> Iterator[Tensor]:
    for i in range(0, inputs.shape[0], batch_size):
        yield inputs[i: i + batch_size]


def check_batch_size(batch_size: int) -> None:
    if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
        raise ConfigError(f"batch_size = {batch_size!r}: must be an integer >= 1")


@torch.no_grad()
def cached_pass(model, inputs: Tensor, names: Sequence[str], fwd_hooks: Sequence[FwdHook] = (),
                batch_size: int = BATCH_SIZE) -> Iterator[tuple[Tensor, Tensor, dict[str, Tensor]]]:
    """For each batch: (tokens, logits, {name: activation}) with ``fwd_hooks`` in effect.

    Activations are read by hooks added after ``fwd_hooks`` on the same points, so they see the
    edited values.
    """
    device = device_of(model)
    wanted = set(names)
    for tokens in batches(inputs, batch_size):
        store: dict[str, Tensor] = {}

        def save(act: Tensor, hook) -> None:
            store[hook.name] = act.detach()

        with hooked(model, [*fwd_hooks, *((n, save) for n in names)]):
            logits = model(tokens.to(device))
        assert wanted <= set(store), f"hook points not reached: {sorted(wanted - set(store))}"
        yield tokens, logits, store


@dataclass(frozen=True)
class Metrics:
    """The seed's validation metrics on the output positions (and the accuracy per position)."""

    loss: float
    acc: float
    seq_acc: float
    n_val: int
    per_position_acc: tuple[float, ...] = ()  # o1, o2, ...; acc is their mean

    def to_dict(self, base: "Metrics | None" = None) -> dict[str, Any]:
        out: dict[str, Any] = {"loss": self.loss, "acc": self.acc, "seq_acc": self.seq_acc,
                               "n_val": self.n_val, "per_position_acc": list(self.per_position_acc)}
        if base is not None:
            out["delta_acc"] = self.acc - base.acc
            out["delta_loss"] = self.loss - base.loss
        return to_json(out)


@torch.no_grad()
def val_metrics(model, data: Dataset, fwd_hooks: Sequence[FwdHook] = (),
                batch_size: int = BATCH_SIZE) -> Metrics:
    """loss, acc, seq_acc on the validation set with ``fwd_hooks`` attached for this call only."""
    with hooked(model, fwd_hooks):
        m = evaluate(model, data, batch_size)
    return Metrics(loss=m["loss"], acc=m["acc"], seq_acc=m["seq_acc"], n_val=m["n_val"],
                   per_position_acc=tuple(m["per_position_acc"]))


@torch.no_grad()
def mean_activation(model, data: Dataset, name: str, fwd_hooks: Sequence[FwdHook] = (),
                    dims: tuple[int, ...] = (0,), batch_size: int = BATCH_SIZE) -> Tensor:
    """Mean of activation ``name`` over the validation set (and over ``dims`` beyond the batch)."""
    total: Tensor | None = None
    count = 0
    for _, _, acts in cached_pass(model, data.val_inputs, [name], fwd_hooks, batch_size):
        act = acts[name].double()
        n = math.prod(act.shape[d] for d in dims)
        s = act.sum(dim=dims)
        total = s if total is None else total + s
        count += n
    assert total is not None
    return (total / count).to(torch.float32)


# ---- checks ----------------------------------------------------------------------------------

def check_model(model, config: Config) -> None:
    """The model must be the listcopy model of ``config`` (shapes agree)."""
    cfg = getattr(model, "cfg", None)
    if cfg is None or not hasattr(model, "hooks") or not hasattr(model, "blocks"):
        raise ConfigError("analysis needs a listcopy model (a TransformerLens HookedRootModule)")
    want = (config.model.n_layers, config.model.n_heads, config.model.d_model, config.task.vocab,
            config.task.seq_len)
    have = (cfg.n_layers, cfg.n_heads, cfg.d_model, cfg.d_vocab, cfg.n_ctx)
    if want != have:
        raise ConfigError(f"model shape (layers, heads, d_model, vocab, seq_len) = {have} does not "
                          f"match config {config.name} {want}")


def checked_inputs(model, config: Config, data: Dataset | None, batch_size: int, *,
                   example: int | None = None, layer: int | None = None) -> Dataset:
    """The common start of an analysis: check the model and batch size, default to the seed's
    split, and check ``example`` (a validation row) and ``layer`` where the analysis takes one."""
    check_model(model, config)
    check_batch_size(batch_size)
    data = data if data is not None else dataset(config)
    if example is not None:
        check_example(example, data)
    if layer is not None:
        check_layer(layer, config)
    return data


def check_layer(layer: int, config: Config) -> int:
    n = config.model.n_layers
    if not isinstance(layer, int) or isinstance(layer, bool) or not 0 <= layer < n:
        raise ConfigError(f"layer = {layer!r}: must be in 0 .. {n - 1}")
    return layer


def large_split_notice(config: Config, val_rows: int | None, limit: int = 50_000) -> str | None:
    """One line for a user about to analyse more than ``limit`` validation lists (every ablation
    is a pass over them) without ``val_rows``; None otherwise."""
    n = config.task.n_val
    if val_rows is not None or n <= limit:
        return None
    return (f"{config.name}: every ablation passes over all {n} validation lists; "
            f"--val-rows N analyses the first N only")


def check_val_rows(val_rows: int | None) -> int | None:
    """None (every validation list) or how many of the first ones to use: an integer >= 1."""
    if val_rows is not None and (not isinstance(val_rows, int) or isinstance(val_rows, bool)
                                 or val_rows < 1):
        raise ConfigError(f"val_rows = {val_rows!r}: must be an integer >= 1 (or None: all)")
    return val_rows


def check_example(example: int, data: Dataset) -> int:
    n = data.val_inputs.shape[0]
    if not isinstance(example, int) or isinstance(example, bool) or not 0 <= example < n:
        raise ConfigError(f"example = {example!r}: must be an index into the {n} validation lists"
                          f" (0 .. {n - 1})")
    return example


# ---- JSON ------------------------------------------------------------------------------------

def _round(x: float, digits: int) -> float | None:
    if not math.isfinite(x):
        return None
    return float(f"{x:.{digits}g}")


def to_json(value: Any, digits: int = 7) -> Any:
    """Lists, dicts, floats (``digits`` significant digits), ints, bools, str, None; no NaN."""
    if isinstance(value, Tensor):
        value = value.detach().cpu()
        value = value.numpy() if value.dtype != torch.bfloat16 else value.float().numpy()
    if isinstance(value, np.ndarray):
        if value.dtype == np.bool_:
            return value.tolist()
        if np.issubdtype(value.dtype, np.integer):
            return value.tolist()
        return to_json(value.astype(np.float64).tolist(), digits)
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return _round(float(value), digits)
    if isinstance(value, dict):
        return {str(k): to_json(v, digits) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_json(v, digits) for v in value]
    if value is None or isinstance(value, str):
        return value
    if hasattr(value, "to_dict"):
        return value.to_dict()
    raise TypeError(f"cannot convert {type(value).__name__} to JSON")
