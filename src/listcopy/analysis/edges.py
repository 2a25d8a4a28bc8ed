"""Edge ablation: zero one attention edge (layer, query, key) at ``hook_pattern`` at a time, in
every head, with no renormalisation of the row (as the research line does), for every edge the
model's masks allow; the change in accuracy per edge; the edges whose removal changes accuracy by
less than a tolerance, and the metrics with all of those removed at once.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..config import Config
from ..task import Dataset, LayerMask, attention_mask, model_masks, token_labels
from .common import BATCH_SIZE, FwdHook, Metrics, checked_inputs, to_json, val_metrics
from .critical import TOLERANCE, check_tolerance, single_edge_metrics
from .pattern_edits import ablation_hooks


def allowed_edges(list_len: int, masking: LayerMask | None = None) -> list[tuple[int, int]]:
    """(query, key) pairs the seed's mask (or one layer's ``masking``: with the research line's
    layer-0 mask the outputs have none there) allows, in row-major order."""
    allowed = attention_mask(list_len) == 0 if masking is None else masking.allowed
    return [(int(q), int(k)) for q, k in allowed.nonzero().tolist()]


def edge_hooks(edges: list[tuple[int, int, int]]) -> list[FwdHook]:
    """Hooks setting pattern[:, :, q, k] = 0 (all heads, no renormalisation) for each (layer, q, k)."""
    return ablation_hooks(edges, renorm=False)


@dataclass(frozen=True)
class EdgeResult:
    layer: int
    query: int
    key: int
    label: str  # "SEP<-d1"
    metrics: Metrics


@dataclass(frozen=True)
class EdgeAblationResult:
    base: Metrics
    edges: tuple[EdgeResult, ...]
    tolerance: float
    combined: Metrics  # every removable edge zeroed at once

    def delta_acc(self, edge: EdgeResult) -> float:
        return edge.metrics.acc - self.base.acc

    @property
    def removable(self) -> tuple[EdgeResult, ...]:
        """Edges whose removal changes accuracy by less than the tolerance (either way)."""
        return tuple(e for e in self.edges if abs(self.delta_acc(e)) < self.tolerance)

    def to_dict(self) -> dict:
        def row(e: EdgeResult) -> dict:
            return {"layer": e.layer, "query": e.query, "key": e.key, "label": e.label,
                    **e.metrics.to_dict(self.base)}
        return to_json({"tolerance": self.tolerance, "base": self.base.to_dict(),
                        "edges": [row(e) for e in self.edges],
                        "removable": [[e.layer, e.query, e.key] for e in self.removable],
                        "combined": self.combined.to_dict(self.base)})


@torch.no_grad()
def edge_ablation(model, config: Config, data: Dataset | None = None, tolerance: float = TOLERANCE,
                  batch_size: int = BATCH_SIZE) -> EdgeAblationResult:
    data = checked_inputs(model, config, data, batch_size)
    tolerance = check_tolerance(tolerance)
    labels = token_labels(config.task.list_len)
    base = val_metrics(model, data, batch_size=batch_size)
    edges = [(layer, q, k) for layer, masking in enumerate(model_masks(config))
             for q, k in allowed_edges(config.task.list_len, masking)]
    results = [EdgeResult(layer, q, k, f"{labels[q]}<-{labels[k]}", m) for (layer, q, k), m
               in zip(edges, single_edge_metrics(model, data, edges, False, batch_size))]
    partial = EdgeAblationResult(base, tuple(results), float(tolerance), base)
    removable = [(e.layer, e.query, e.key) for e in partial.removable]
    combined = val_metrics(model, data, edge_hooks(removable), batch_size) if removable else base
    return EdgeAblationResult(base, tuple(results), float(tolerance), combined)
