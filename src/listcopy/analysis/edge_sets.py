"""Ablation of any set of attention edges at once, with the error taxonomy of the paper's
section 4.1: per output position, how often it is wrong and where its wrong predictions come
from (the previous output's prediction, each input digit).

    >>> r = ablate_edges(model, config, parse_edges("0:4-3,0-0,1-0;1:0-0,1-0,2-0,2-1,4-3", 2, 5))
    >>> r.to_dict()["errors"]["o2"]     # {"wrong", "n_wrong", "eq_prev_pred", "eq_d1", "eq_d2"}

``wrong`` is the fraction of validation lists wrong at that position; each ``eq_*`` the fraction
of those wrong predictions equal to the thing named (None when there is no wrong prediction;
``eq_prev_pred`` is None at o1, which has no previous output).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable

import torch
from torch import Tensor

from ..config import Config, ConfigError
from ..metrics import output_logits, output_metrics
from ..task import Dataset
from .common import BATCH_SIZE, FwdHook, Metrics, checked_inputs, hooked, to_json
from .pattern_edits import Edge, ablation_hooks, format_edges


def error_taxonomy(preds: Tensor, targets: Tensor, digits: Tensor) -> dict[str, dict[str, Any]]:
    """preds, targets (N, L) at the output positions, digits (N, L) the inputs -> per output
    position ``o{j}``: ``wrong``, ``n_wrong``, ``eq_prev_pred`` and ``eq_d{i}`` for each digit."""
    n, L = preds.shape
    out: dict[str, dict[str, Any]] = {}
    for j in range(L):
        wrong = preds[:, j] != targets[:, j]
        n_wrong = int(wrong.sum())

        def rate(same: Tensor) -> float | None:
            return float(same[wrong].double().mean()) if n_wrong else None

        row: dict[str, Any] = {"wrong": float(wrong.double().mean()) if n else None,
                               "n_wrong": n_wrong,
                               "eq_prev_pred": rate(preds[:, j] == preds[:, j - 1]) if j else None}
        for i in range(L):
            row[f"eq_d{i + 1}"] = rate(preds[:, j] == digits[:, i])
        out[f"o{j + 1}"] = row
    return out


@dataclass(frozen=True)
class Predictions:
    """The metrics and the predictions (N, L) at the output positions under some hooks."""

    metrics: Metrics
    preds: Tensor


@torch.no_grad()
def predictions(model, data: Dataset, fwd_hooks: Iterable[FwdHook] = (),
                batch_size: int = BATCH_SIZE) -> Predictions:
    """Validation metrics and predictions with ``fwd_hooks`` attached for this call only."""
    with hooked(model, list(fwd_hooks)):
        logits = output_logits(model, data, batch_size)
    targets = data.val_targets[:, data.task.output_slice].to(logits.device)
    m = output_metrics(logits, targets)
    return Predictions(Metrics(m["loss"], m["acc"], m["seq_acc"], m["n_val"],
                               tuple(m["per_position_acc"])), logits.argmax(-1).cpu())


@dataclass(frozen=True)
class EdgeSetResult:
    edges: tuple[Edge, ...]
    renorm: bool
    base: Metrics
    metrics: Metrics
    errors: dict[str, dict[str, Any]]  # o1 .. oL -> the error taxonomy

    def to_dict(self) -> dict:
        m = self.metrics.to_dict(self.base)
        return to_json({"edges": format_edges(self.edges), "renorm": self.renorm,
                        **{k: m[k] for k in ("acc", "seq_acc", "per_position_acc", "loss",
                                             "n_val", "delta_acc")},
                        "base": self.base.to_dict(), "errors": self.errors})


@torch.no_grad()
def ablate_edges(model, config: Config, edges: Iterable[Edge], renorm: bool = True,
                 data: Dataset | None = None, batch_size: int = BATCH_SIZE) -> EdgeSetResult:
    """Zero every edge of ``edges`` at once (renormalising the touched rows unless ``renorm`` is
    False) and measure accuracy and the error taxonomy on the validation set."""
    data = checked_inputs(model, config, data, batch_size)
    edges = tuple(tuple(int(x) for x in e) for e in edges)
    T, n_layers = config.task.seq_len, config.model.n_layers
    for layer, q, k in edges:
        if not (0 <= layer < n_layers and 0 <= q < T and 0 <= k < T):
            raise ConfigError(f"edge (layer {layer}, query {q}, key {k}) outside the model's "
                              f"{n_layers} layers x {T} positions")
    base = predictions(model, data, batch_size=batch_size)
    ablated = predictions(model, data, ablation_hooks(edges, renorm), batch_size)
    L = config.task.list_len
    targets = data.val_targets[:, config.task.output_slice]
    errors = error_taxonomy(ablated.preds, targets, data.val_inputs[:, :L])
    return EdgeSetResult(edges, bool(renorm), base.metrics, ablated.metrics, errors)
