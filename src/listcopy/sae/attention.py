"""Are latents graded or binary? Their activations against ``alpha_{s->d_i}``, layer 0's attention.

The paper predicts latents whose *magnitude* carries order: a latent along ``E_d + P_i`` fires with
activation proportional to ``alpha_{s->d_i}``. For each alive latent:

    corr_all[i]     Pearson correlation of its activation with alpha_i over all lists (zeros included)
    corr_active[i]  the same over the lists where it fires (how the magnitude follows alpha_i)
    cv_active       std / mean of its activation where it fires (near 0: one fixed magnitude)
    kind            "graded" if max_i |corr_active[i]| >= GRADED, else "binary" if cv_active < BINARY_CV,
                    else "other"

and, for list_len >= 2, the line's statistic: correlation with ``alpha_1 - alpha_2`` over all lists
(its "special" latents have |corr| > SPECIAL).
"""

from __future__ import annotations

import torch
from torch import Tensor

from .latents import LatentTable

GRADED = 0.5
BINARY_CV = 0.1
SPECIAL = 0.5
MIN_ACTIVE = 3  # correlations over fewer firing lists are not reported


def pearson(x: Tensor, y: Tensor) -> float | None:
    """Pearson correlation of two 1-D tensors in float64; None when either is constant."""
    x, y = x.double() - x.double().mean(), y.double() - y.double().mean()
    denom = (x.pow(2).sum() * y.pow(2).sum()).sqrt()
    return None if denom == 0 else float((x * y).sum() / denom)


def latent_kind(corr_active: list, cv: float | None, graded: float = GRADED,
                binary_cv: float = BINARY_CV) -> str:
    best = max((abs(c) for c in corr_active if c is not None), default=None)
    if best is not None and best >= graded:
        return "graded"
    if cv is not None and cv < binary_cv:
        return "binary"
    return "other"


def alpha_correlations(table: LatentTable, alive: Tensor) -> dict:
    """Per alive latent its correlations with each alpha and its kind; counts over latents."""
    rows = []
    L = table.alpha.shape[1]
    diff = table.alpha[:, 0] - table.alpha[:, 1] if L >= 2 else None
    for j in torch.nonzero(alive).flatten().tolist():
        a = table.z[:, j]
        on = a != 0
        act = a[on]
        corr_active = ([pearson(act, table.alpha[on, i]) for i in range(L)]
                       if int(on.sum()) >= MIN_ACTIVE else [None] * L)
        cv = float(act.std() / act.mean()) if act.numel() >= 2 and act.mean() != 0 else None
        rows.append({"latent": j, "frac_active": float(on.float().mean()),
                     "corr_all": [pearson(a, table.alpha[:, i]) for i in range(L)],
                     "corr_active": corr_active, "cv_active": cv,
                     "corr_alpha_diff": pearson(a, diff) if diff is not None else None,
                     "kind": latent_kind(corr_active, cv)})
    kinds = [r["kind"] for r in rows]
    all_corr = [abs(c) for r in rows for c in r["corr_all"] if c is not None]
    special = [r for r in rows if r["corr_alpha_diff"] is not None
               and abs(r["corr_alpha_diff"]) > SPECIAL]
    return {"latents": rows, "position": table.position,
            "n_graded": kinds.count("graded"), "n_binary": kinds.count("binary"),
            "n_other": kinds.count("other"),
            "max_abs_corr": max(all_corr, default=None), "n_special": len(special),
            "thresholds": {"graded": GRADED, "binary_cv": BINARY_CV, "special": SPECIAL}}
