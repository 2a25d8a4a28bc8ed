"""Critical-edge search (the paper's section 4.1 and Figure 1): ablate each attention edge the
model's mask allows on its own; an edge is critical when removing it lowers validation accuracy by
more than ``tolerance``; then every non-critical edge is removed at once. With the validation
example's patterns and logit lens, the critical edges draw the minimal circuit.

The edges are read from the model, not from a mask rule: every (layer, query, key) whose score at
``hook_attn_scores`` is finite (the research line's "valid attention positions"), so a model with
another mask per layer is searched over its own edges. Ablation renormalises the touched rows by
default (as the line's ``find_critical_attention_edges``); ``renorm=False`` only zeroes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch

from ..config import Config, ConfigError
from ..task import Dataset, token_labels
from .common import BATCH_SIZE, Metrics, cached_pass, checked_inputs, scores_name, to_json, val_metrics
from .lens import LogitLensResult, logit_lens
from .pattern_edits import Edge, ablation_hooks

TOLERANCE = 1e-3  # the research line's accuracy_tolerance


def model_edges(model, config: Config, data: Dataset) -> list[Edge]:
    """Every (layer, query, key) the model's mask allows: a finite score on the first validation
    list (every head), layer by layer, row-major."""
    n_layers = config.model.n_layers
    names = [scores_name(layer) for layer in range(n_layers)]
    (_, _, acts), = cached_pass(model, data.val_inputs[:1], names)
    edges: list[Edge] = []
    for layer, name in enumerate(names):
        finite = acts[name][0].isfinite().all(0)  # (Q, K): allowed in every head
        edges += [(layer, int(q), int(k)) for q, k in finite.nonzero().tolist()]
    return edges


def single_edge_metrics(model, data: Dataset, edges: Sequence[Edge], renorm: bool,
                        batch_size: int = BATCH_SIZE) -> list[Metrics]:
    """Validation metrics with each edge of ``edges`` ablated on its own."""
    return [val_metrics(model, data, ablation_hooks([e], renorm), batch_size) for e in edges]


def check_tolerance(tolerance: float) -> float:
    if not isinstance(tolerance, (int, float)) or isinstance(tolerance, bool) or not tolerance >= 0:
        raise ConfigError(f"tolerance = {tolerance!r}: must be a number >= 0")
    return float(tolerance)


@dataclass(frozen=True, eq=False)
class CriticalEdgesResult:
    labels: tuple[str, ...]                 # positions: d1 .. dL, SEP, o1 .. oL
    tolerance: float
    renorm: bool
    base: Metrics
    edges: tuple[Edge, ...]                 # every edge searched
    single: tuple[Metrics, ...]             # metrics with that edge ablated alone
    without_non_critical: Metrics           # every non-critical edge ablated at once
    example: LogitLensResult                # the circuit's example: patterns and logit lens

    def delta(self, i: int) -> float:
        return self.single[i].acc - self.base.acc

    @property
    def critical(self) -> list[tuple[int, int, int, float]]:
        """``[layer, query, key, delta_acc]`` of every edge whose removal costs more than the
        tolerance, in search order."""
        return [(*e, self.delta(i)) for i, e in enumerate(self.edges)
                if self.delta(i) < -self.tolerance]

    @property
    def non_critical(self) -> list[tuple[int, int, int, float]]:
        return [(*e, self.delta(i)) for i, e in enumerate(self.edges)
                if not self.delta(i) < -self.tolerance]

    def to_dict(self) -> dict:
        ex = self.example
        return to_json({
            "tolerance": self.tolerance, "renorm": self.renorm, "labels": list(self.labels),
            "base": self.base.to_dict(),
            "critical": [list(r) for r in self.critical],
            "non_critical": [list(r) for r in self.non_critical],
            "acc_without_non_critical": self.without_non_critical.acc,
            "without_non_critical": self.without_non_critical.to_dict(self.base),
            "example": {k: v for k, v in ex.to_dict().items()
                        if k in ("example_index", "tokens", "targets", "stage_labels",
                                 "top_token", "top_prob", "target_prob", "attention")}})


@torch.no_grad()
def critical_edges(model, config: Config, data: Dataset | None = None,
                   tolerance: float = TOLERANCE, renorm: bool = True, example: int = 0,
                   batch_size: int = BATCH_SIZE) -> CriticalEdgesResult:
    """Search every edge of the model's mask: critical (removing it alone costs more than
    ``tolerance`` accuracy) or not; then the accuracy with all non-critical edges removed."""
    data = checked_inputs(model, config, data, batch_size, example=example)
    tolerance = check_tolerance(tolerance)
    edges = model_edges(model, config, data)
    base = val_metrics(model, data, batch_size=batch_size)
    single = single_edge_metrics(model, data, edges, renorm, batch_size)
    keep = [e for e, m in zip(edges, single) if not m.acc - base.acc < -tolerance]
    combined = val_metrics(model, data, ablation_hooks(keep, renorm), batch_size) if keep else base
    return CriticalEdgesResult(
        labels=tuple(token_labels(config.task.list_len)), tolerance=tolerance, renorm=bool(renorm),
        base=base, edges=tuple(edges), single=tuple(single), without_non_critical=combined,
        example=logit_lens(model, config, data, example, batch_size))


def summary_lines(r: dict) -> list[str]:
    """The ``critical_edges`` result as a few readable lines."""
    labels = r["labels"]
    crit = ", ".join(f"L{l} {labels[q]}<-{labels[k]} {d:+.4f}" for l, q, k, d in r["critical"])
    return [f"critical edges (drop > {r['tolerance']:g}, renorm {'on' if r['renorm'] else 'off'}): "
            f"{len(r['critical'])} of {len(r['critical']) + len(r['non_critical'])}; all others "
            f"ablated at once: acc {r['acc_without_non_critical']:.4f}",
            f"  {crit or 'none'}"]
