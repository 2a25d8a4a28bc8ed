"""Swapped pairs (the paper's equation 5, Figure 4): how SEP's layer-0 attention to two digit
positions changes when their digits are swapped, and whether the model fails where the two
weights are close.

For positions i < j (d1, d2 by default) and validation lists x = (.., a, .., b, ..) and
x' = (.., b, .., a, ..) with a != b and everything else equal, both in the validation set:
``alpha`` on x and ``alpha'`` on x' (SEP's pattern row, summed over heads). If order is carried
by relative magnitude, the larger weight stays with the position: ``sign(alpha_i - alpha_j)`` is
the same on x and x', so the weights on the digits themselves reverse. Reported: that rate, the
share of lists with ``alpha_i > alpha_j``, the distributions of equation 5's coefficients
(``alpha'_a - alpha_a`` on E_a, ``alpha'_b - alpha_b`` on E_b, ``alpha'_b - alpha_a`` on P_i,
``alpha'_a - alpha_b`` on P_j) and, over every validation list, the error rate against the gap
``|alpha_i - alpha_j|`` (ten quantile bins) with the ROC AUC of a small gap as a predictor of an
error (0.5: unrelated; 1: every error has a smaller gap than every right list).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from ..config import Config, ConfigError
from ..task import Dataset, token_labels
from .attention import sep_attention
from .common import BATCH_SIZE, checked_inputs, to_json
from .paths import NotApplicable

N_BINS = 10
HIST_BINS = 30


def sep_alpha(model, config: Config, data: Dataset, layer: int = 0,
              batch_size: int = BATCH_SIZE) -> tuple[Tensor, Tensor]:
    """(N, L) SEP's weights on the digit positions at ``layer`` (summed over heads, float64) and
    (N, L) bool: each output position right (from :func:`.attention.sep_attention`)."""
    sep = sep_attention(model, config, data, layer, batch_size)
    return sep.pattern.double().sum(1), sep.token_correct


def swap_partners(lists: Tensor, i: int, j: int) -> tuple[Tensor, Tensor]:
    """Row indices (x, x') of every pair of lists equal but for positions i and j swapped, with
    the digit at i smaller than at j on x (so each pair counts once)."""
    index = {tuple(row): r for r, row in enumerate(lists.tolist())}
    xs, partners = [], []
    for r, row in enumerate(lists.tolist()):
        if row[i] < row[j]:
            swapped = list(row)
            swapped[i], swapped[j] = row[j], row[i]
            p = index.get(tuple(swapped))
            if p is not None:
                xs.append(r)
                partners.append(p)
    return torch.tensor(xs, dtype=torch.int64), torch.tensor(partners, dtype=torch.int64)


def _dist(v: np.ndarray) -> dict:
    counts, edges = np.histogram(v, bins=HIST_BINS)
    return {"mean": float(v.mean()), "std": float(v.std()), "counts": counts, "edges": edges}


def auc(score: np.ndarray, positive: np.ndarray) -> float:
    """ROC AUC of ``score`` for ``positive``: the chance that a random positive scores above a
    random negative, ties counting half (the Mann-Whitney U statistic over the two counts)."""
    _, where, count = np.unique(score, return_inverse=True, return_counts=True)
    ranks = (np.cumsum(count) - (count - 1) / 2)[where]  # 1-based, ties get their mean rank
    n_pos = int(positive.sum())
    n_neg = len(score) - n_pos
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def gap_errors(gap: np.ndarray, wrong: np.ndarray) -> dict:
    """Error rate in quantile bins of ``gap``, mean gap of right and wrong lists, and the AUC of
    a small gap for an error."""
    edges = np.unique(np.quantile(gap, np.linspace(0, 1, N_BINS + 1)))
    which = np.clip(np.searchsorted(edges, gap, side="right") - 1, 0, max(len(edges) - 2, 0))
    bins = [{"lo": float(edges[b]), "hi": float(edges[min(b + 1, len(edges) - 1)]),
             "n": int((which == b).sum()),
             "error_rate": float(wrong[which == b].mean()) if (which == b).any() else None}
            for b in range(max(len(edges) - 1, 1))]
    both = wrong.any() and not wrong.all()
    return {"bins": bins, "mean_gap_right": float(gap[~wrong].mean()) if (~wrong).any() else None,
            "mean_gap_wrong": float(gap[wrong].mean()) if wrong.any() else None,
            "auc_small_gap_error": auc(-gap, wrong) if both else None}


@dataclass(frozen=True)
class SwappedPairsResult:
    layer: int
    positions: tuple[str, str]       # ("d1", "d2")
    n_pairs: int
    stats: dict                      # rates and distributions (see the module's docstring)

    def to_dict(self) -> dict:
        return to_json({"layer": self.layer, "positions": list(self.positions),
                        "n_pairs": self.n_pairs, **self.stats})


@torch.no_grad()
def swapped_pairs(model, config: Config, data: Dataset | None = None, positions=(0, 1),
                  layer: int = 0, batch_size: int = BATCH_SIZE) -> SwappedPairsResult:
    data = checked_inputs(model, config, data, batch_size, layer=layer)
    L = config.task.list_len
    i, j = (int(p) for p in positions)
    if L < 2:
        raise NotApplicable("lists of 1: there is no pair of digits to swap")
    if not 0 <= i < j < L:
        raise ConfigError(f"positions = {tuple(positions)}: need 0 <= i < j < {L}")
    alpha, right = sep_alpha(model, config, data, layer, batch_size)
    xs, ps = swap_partners(data.val_inputs[:, :L], i, j)
    if xs.numel() == 0:
        raise NotApplicable("no list of the validation set has its swapped partner there too")
    a_i, a_j = alpha[xs, i].numpy(), alpha[xs, j].numpy()      # on x = (a, b): alpha_a, alpha_b
    s_i, s_j = alpha[ps, i].numpy(), alpha[ps, j].numpy()      # on x' = (b, a): alpha'_b, alpha'_a
    kept = np.sign(a_i - a_j) == np.sign(s_i - s_j)
    gap = (alpha[:, i] - alpha[:, j]).numpy()
    stats = {
        "position_order_kept": float(kept.mean()),
        "first_larger": float((gap > 0).mean()),
        "delta_alpha": _dist(gap),
        "eq5": {"E_a": _dist(s_j - a_i), "E_b": _dist(s_i - a_j),
                "P_first": _dist(s_i - a_i), "P_second": _dist(s_j - a_j)},
        "errors_by_gap": gap_errors(np.abs(gap), ~right.all(-1).numpy())}
    labels = token_labels(L)
    return SwappedPairsResult(layer, (labels[i], labels[j]), int(xs.numel()), stats)
