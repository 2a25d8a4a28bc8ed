"""Steering: scale one latent, splice the reconstruction in, and see what the model writes.

For a latent and a factor f: on lists where the latent fires at the analysis position (and whose
target outputs are not all one digit, so a swap can be told from a stay), the site's activation
there is replaced by ``decode(z)`` with ``z[latent] *= f``; every other activation is untouched.
Each list's outputs then count as

    stay   the target, exactly
    swap   the target's digits in another order
    break  anything else

Factor 1 (the plain reconstruction) is always run, as the reference for the others.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor

from .latents import LatentTable
from .site import Site, splice_hook

FACTORS = (0.0, 0.5, 2.0, 4.0)
MAX_LISTS = 256  # lists per latent (the first ones it fires on)
TOP = 10


def classify(preds: Tensor, targets: Tensor) -> dict[str, float]:
    """Fractions of rows whose outputs ``preds`` (N, L) stay, swap or break against ``targets``."""
    stay = (preds == targets).all(1)
    same_digits = (preds.sort(1).values == targets.sort(1).values).all(1)
    swap = same_digits & ~stay
    n = max(preds.shape[0], 1)
    return {"stay": stay.sum().item() / n, "swap": swap.sum().item() / n,
            "break": (~same_digits).sum().item() / n}


def scaled_hook(sae, site: Site, latent: int, factor: float):
    def edit(rows: Tensor) -> Tensor:
        z = sae.encode(rows)
        z[:, latent] = z[:, latent] * factor
        return sae.decode(z)

    return splice_hook(site, edit)


@torch.no_grad()
def steer_latent(model, sae, table: LatentTable, hook: str, latent: int,
                 factors: Sequence[float] = FACTORS, max_lists: int = MAX_LISTS) -> dict:
    """stay / swap / break fractions for each factor (and factor 1) on the lists ``latent`` fires on."""
    varied = (table.targets != table.targets[:, :1]).any(1)
    rows = torch.nonzero((table.z[:, latent] != 0) & varied).flatten()[:max_lists]
    site = Site(hook, (table.position,))
    out = model.config.task.output_slice
    device = next(model.parameters()).device
    inputs, targets = table.inputs[rows].to(device), table.targets[rows].to(device)
    by_factor = {}
    for f in sorted({1.0, *map(float, factors)}):
        if rows.numel() == 0:
            break
        with model.hooks(fwd_hooks=[scaled_hook(sae, site, latent, f)]):
            preds = model(inputs)[:, out].argmax(-1)
        by_factor[f"{f:g}"] = classify(preds, targets)
    return {"latent": latent, "n_lists": int(rows.numel()), "by_factor": by_factor}


def steering(model, sae, table: LatentTable, hook: str, latents: Sequence[int],
             factors: Sequence[float] = FACTORS, max_lists: int = MAX_LISTS) -> dict:
    """``steer_latent`` for each latent; the latents that swap outputs most often, per factor."""
    rows = [steer_latent(model, sae, table, hook, j, factors, max_lists) for j in latents]
    top = {}
    for f in sorted({1.0, *map(float, factors)}):
        key = f"{f:g}"
        ranked = sorted((r for r in rows if key in r["by_factor"]),
                        key=lambda r: -r["by_factor"][key]["swap"])
        top[key] = [{"latent": r["latent"], **r["by_factor"][key]} for r in ranked[:TOP]]
    return {"factors": sorted({1.0, *map(float, factors)}), "max_lists": max_lists,
            "latents": rows, "top_swap": top}
