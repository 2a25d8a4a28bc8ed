"""Swapped pairs: lists ``(a, b, ...)`` and ``(b, a, ...)`` (a != b, the first two digits exchanged,
the rest equal), both in the table. Equation 5 says the model tells them apart by the magnitudes of
the same directions; if the SAE does the same, the two lists share latents at different strengths.

Each pair is ordered so that its first list has ``a < b``. Per pair: the latents active on each,
those active on both (shared) and the Jaccard index; for every shared latent the ratio of its
activation on ``(a, b)`` to that on ``(b, a)``.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .latents import LatentTable

NEAR_ONE = 0.1  # a ratio within 10% of 1 counts as "the same magnitude"
TOP = 20        # latents listed, by how often they are shared


def swapped_pairs(lists: Tensor) -> Tensor:
    """Row-index pairs (P, 2) of ``lists`` (N, L >= 2): (a, b, ...) first with a < b, then (b, a, ...)."""
    index = {tuple(row): i for i, row in enumerate(lists.tolist())}
    pairs = []
    for i, row in enumerate(lists.tolist()):
        if row[0] < row[1]:
            j = index.get((row[1], row[0], *row[2:]))
            if j is not None:
                pairs.append((i, j))
    return torch.tensor(pairs, dtype=torch.int64).reshape(-1, 2)


def swap_statistics(table: LatentTable) -> dict:
    """Latents shared by swapped pairs and the ratio of their magnitudes."""
    if table.lists.shape[1] < 2:
        return {"n_pairs": 0}
    pairs = swapped_pairs(table.lists)
    if pairs.shape[0] == 0:
        return {"n_pairs": 0}
    za, zb = table.z[pairs[:, 0]], table.z[pairs[:, 1]]
    on_a, on_b = za != 0, zb != 0
    shared = on_a & on_b
    union = (on_a | on_b).sum(1).clamp(min=1)
    ratio = za[shared] / zb[shared]
    log2 = ratio.double().log2().abs()
    return {"n_pairs": int(pairs.shape[0]),
            "mean_active": float(torch.cat([on_a.sum(1), on_b.sum(1)]).float().mean()),
            "mean_shared": float(shared.sum(1).float().mean()),
            "mean_jaccard": float((shared.sum(1) / union).mean()),
            "frac_same_set": float((on_a == on_b).all(1).float().mean()),
            "ratio": {"n": int(ratio.numel()),
                      "median": float(ratio.median()) if ratio.numel() else None,
                      "median_abs_log2": float(log2.median()) if ratio.numel() else None,
                      "frac_near_one": float(((ratio - 1).abs() <= NEAR_ONE).float().mean())
                      if ratio.numel() else None},
            "latents": _per_latent(za, zb, shared)}


def _per_latent(za: Tensor, zb: Tensor, shared: Tensor) -> list[dict]:
    counts = shared.sum(0)
    out = []
    for j in counts.argsort(descending=True)[:TOP].tolist():
        if counts[j] == 0:
            break
        r = za[shared[:, j], j] / zb[shared[:, j], j]
        out.append({"latent": j, "n_shared": int(counts[j]), "median_ratio": float(r.median())})
    return out
