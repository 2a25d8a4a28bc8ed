"""Ablations of the residual stream and of attention, each measured with the seed's metrics.

- mean attention: every layer's scores replaced by ``log(mean pattern + 1e-12)`` (the seed's cell:
  the softmax then gives the mean pattern over the validation set);
- positional embedding: ``W_pos`` subtracted at every position but SEP, at one residual point;
- skip connection, per layer and at all layers at once: ``resid_post = attn_out`` ("zero") or
  ``attn_out + mean(resid_pre)`` over the validation set and positions ("mean").

Every function attaches its hooks for the call only and returns metrics beside the clean ones.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from ..config import Config
from ..task import Dataset
from .attention import mean_patterns
from .common import (BATCH_SIZE, FwdHook, Metrics, checked_inputs, mean_activation, resid_post,
                     resid_pre, resid_stages, scores_name, val_metrics)

MEAN_ATTENTION_EPS = 1e-12  # the seed's log(avg + 1e-12)


# ---- mean attention --------------------------------------------------------------------------

def mean_attention_hooks(means: Tensor, eps: float = MEAN_ATTENTION_EPS) -> list[FwdHook]:
    """Hooks replacing each layer's scores (B, H, Q, K) by ``log(means[layer] + eps)``."""

    def make(log_mean: Tensor):
        def hook(scores: Tensor, hook) -> Tensor:
            return log_mean.to(scores).unsqueeze(0).expand_as(scores)
        return hook

    return [(scores_name(layer), make((means[layer] + eps).log())) for layer in range(len(means))]


@dataclass(frozen=True, eq=False)
class MeanAttentionResult:
    base: Metrics
    ablated: Metrics
    means: Tensor  # (n_layers, H, T, T) the patterns every example is given
    eps: float = MEAN_ATTENTION_EPS

    def to_dict(self) -> dict:
        return {**self.ablated.to_dict(self.base), "eps": self.eps}


@torch.no_grad()
def mean_attention_ablation(model, config: Config, data: Dataset | None = None,
                            means: Tensor | None = None,
                            batch_size: int = BATCH_SIZE) -> MeanAttentionResult:
    """Metrics when every layer attends with its mean validation pattern, whatever the input."""
    data = checked_inputs(model, config, data, batch_size)
    if means is None:
        means = mean_patterns(model, config, data, batch_size)
    base = val_metrics(model, data, batch_size=batch_size)
    ablated = val_metrics(model, data, mean_attention_hooks(means), batch_size)
    return MeanAttentionResult(base=base, ablated=ablated, means=means)


# ---- positional embedding --------------------------------------------------------------------

def pos_ablation_hook(W_pos: Tensor, sep: int):
    """A hook subtracting ``W_pos`` (T, D) from a residual stream (B, T, D) except at ``sep``."""
    delta = W_pos.detach().clone()
    delta[sep] = 0.0

    def hook(resid: Tensor, hook) -> Tensor:
        return resid - delta[: resid.shape[1]].to(resid)

    return hook


@dataclass(frozen=True)
class PosAblationResult:
    base: Metrics
    by_hook: dict[str, Metrics]  # hook name -> metrics with W_pos removed there

    def to_dict(self) -> dict:
        return {name: m.to_dict(self.base) for name, m in self.by_hook.items()}


@torch.no_grad()
def pos_ablation(model, config: Config, data: Dataset | None = None,
                 batch_size: int = BATCH_SIZE) -> PosAblationResult:
    """Subtract ``W_pos`` at every position but SEP, at ``blocks.0.hook_resid_pre`` and at each
    ``blocks.L.hook_resid_post`` in turn (one point per run)."""
    data = checked_inputs(model, config, data, batch_size)
    hook = pos_ablation_hook(model.W_pos, config.task.list_len)
    base = val_metrics(model, data, batch_size=batch_size)
    by_hook = {name: val_metrics(model, data, [(name, hook)], batch_size)
               for name in resid_stages(config.model.n_layers)}
    return PosAblationResult(base=base, by_hook=by_hook)


# ---- skip connections ------------------------------------------------------------------------

def skip_hooks(layer: int, mean: Tensor | None = None) -> list[FwdHook]:
    """Hooks making ``blocks.{layer}`` output ``attn_out`` (+ ``mean`` (D,) if given) instead of
    ``attn_out + resid_pre``: the skip connection around the layer removed (or mean-ablated)."""
    stash: dict[str, Tensor] = {}

    def save(attn_out: Tensor, hook) -> None:
        stash["attn_out"] = attn_out

    def replace(resid: Tensor, hook) -> Tensor:
        out = stash.pop("attn_out")
        return out if mean is None else out + mean.to(out)

    return [(f"blocks.{layer}.hook_attn_out", save), (resid_post(layer), replace)]


@dataclass(frozen=True)
class SkipAblationResult:
    base: Metrics
    zero: dict[str, Metrics]  # "0", "1", ..., "all"
    mean: dict[str, Metrics]

    def to_dict(self) -> dict:
        return {"zero": {k: m.to_dict(self.base) for k, m in self.zero.items()},
                "mean": {k: m.to_dict(self.base) for k, m in self.mean.items()}}


def skip_means(model, config: Config, data: Dataset, layers: list[int],
               batch_size: int = BATCH_SIZE) -> dict[int, Tensor]:
    """Mean of ``resid_pre`` (over examples and positions) for each of ``layers``, each measured
    with the skip connections of the earlier listed layers already mean-ablated."""
    means: dict[int, Tensor] = {}
    hooks: list[FwdHook] = []
    for layer in sorted(layers):
        means[layer] = mean_activation(model, data, resid_pre(layer), hooks, dims=(0, 1),
                                       batch_size=batch_size)
        hooks = hooks + skip_hooks(layer, means[layer])
    return means


@torch.no_grad()
def skip_ablation(model, config: Config, data: Dataset | None = None,
                  batch_size: int = BATCH_SIZE) -> SkipAblationResult:
    data = checked_inputs(model, config, data, batch_size)
    n_layers = config.model.n_layers
    layers = list(range(n_layers))
    base = val_metrics(model, data, batch_size=batch_size)
    zero: dict[str, Metrics] = {}
    mean: dict[str, Metrics] = {}
    single: dict[int, Tensor] = {}
    for layer in layers:
        zero[str(layer)] = val_metrics(model, data, skip_hooks(layer), batch_size)
        single[layer] = mean_activation(model, data, resid_pre(layer), dims=(0, 1),
                                        batch_size=batch_size)
        mean[str(layer)] = val_metrics(model, data, skip_hooks(layer, single[layer]), batch_size)
    zero["all"] = val_metrics(model, data, [h for l in layers for h in skip_hooks(l)], batch_size)
    chained = skip_means(model, config, data, layers, batch_size)
    mean["all"] = val_metrics(model, data, [h for l in layers for h in skip_hooks(l, chained[l])],
                              batch_size)
    return SkipAblationResult(base=base, zero=zero, mean=mean)
