"""Edge ablation: zero one attention edge (layer, query, key) at ``hook_pattern`` at a time, in
every head, with no renormalisation of the row (as the research line does), for every edge the
seed's mask allows; the change in accuracy per edge; the edges whose removal changes accuracy by
less than a tolerance, and the metrics with all of those removed at once.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch
from torch import Tensor

from ..config import Config, ConfigError
from ..task import Dataset, attention_mask, token_labels
from .common import BATCH_SIZE, FwdHook, Metrics, checked_inputs, pattern_name, to_json, val_metrics

TOLERANCE = 1e-3  # the research line's accuracy_tolerance


def allowed_edges(list_len: int) -> list[tuple[int, int]]:
    """(query, key) pairs the seed's mask allows, in row-major order."""
    mask = attention_mask(list_len)
    return [(int(q), int(k)) for q, k in (mask == 0).nonzero().tolist()]


def edge_hooks(edges: list[tuple[int, int, int]]) -> list[FwdHook]:
    """Hooks setting pattern[:, :, q, k] = 0 (all heads, no renormalisation) for each (layer, q, k)."""
    by_layer: dict[int, list[tuple[int, int]]] = {}
    for layer, q, k in edges:
        by_layer.setdefault(layer, []).append((q, k))

    def make(pairs: list[tuple[int, int]]):
        qs = torch.tensor([q for q, _ in pairs])
        ks = torch.tensor([k for _, k in pairs])

        def hook(pattern: Tensor, hook) -> Tensor:
            pattern = pattern.clone()
            pattern[:, :, qs, ks] = 0.0
            return pattern
        return hook

    return [(pattern_name(layer), make(pairs)) for layer, pairs in sorted(by_layer.items())]


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


def n_edges(config: Config) -> int:
    """How many edges :func:`edge_ablation` ablates one at a time (one validation pass each)."""
    return config.model.n_layers * len(allowed_edges(config.task.list_len))


@torch.no_grad()
def edge_ablation(model, config: Config, data: Dataset | None = None, tolerance: float = TOLERANCE,
                  batch_size: int = BATCH_SIZE,
                  progress: Callable[[int, int], None] | None = None) -> EdgeAblationResult:
    """``progress(done, total)`` is called after each edge (a list_len 64 model has thousands)."""
    data = checked_inputs(model, config, data, batch_size)
    if (not isinstance(tolerance, (int, float)) or isinstance(tolerance, bool)
            or not 0 <= tolerance < math.inf):
        raise ConfigError(f"tolerance = {tolerance!r}: must be a finite number >= 0")
    labels = token_labels(config.task.list_len)
    base = val_metrics(model, data, batch_size=batch_size)
    results = []
    total = n_edges(config)
    for layer in range(config.model.n_layers):
        for q, k in allowed_edges(config.task.list_len):
            m = val_metrics(model, data, edge_hooks([(layer, q, k)]), batch_size)
            results.append(EdgeResult(layer, q, k, f"{labels[q]}<-{labels[k]}", m))
            if progress is not None:
                progress(len(results), total)
    partial = EdgeAblationResult(base, tuple(results), float(tolerance), base)
    removable = [(e.layer, e.query, e.key) for e in partial.removable]
    combined = val_metrics(model, data, edge_hooks(removable), batch_size) if removable else base
    return EdgeAblationResult(base, tuple(results), float(tolerance), combined)
