"""Learning-rate schedules: the learning rate of every optimiser step of every member.

``constant`` is the seed's. ``warmup_cosine`` is the research line's ``LambdaLR`` (train.py): the
scheduler multiplies the base lr by ``factor(k)`` where ``k`` counts the scheduler steps taken so
far, and the loop steps the scheduler after each optimiser step, so optimiser step ``s`` (0-based)
uses ``lr * factor(s)`` - the first step trains with ``factor(0) = 0`` under warmup::

    factor(k) = k / max(1, warmup)                                    k < warmup
                0.5 * (1 + cos(pi * (k - warmup) / max(1, max_steps - warmup)))   otherwise

Factors are computed in Python floats, as ``LambdaLR`` does, then multiplied by the base lr in
float64 (the same IEEE product as Python's).
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import Tensor

from .config import TrainConfig


def lr_factor(step: int, train: TrainConfig) -> float:
    """The factor optimiser step ``step`` (0-based) applies to ``train.lr``."""
    if train.lr_schedule == "constant":
        return 1.0
    warmup = train.warmup_steps
    if step < warmup:
        return float(step) / float(max(1, warmup))
    progress = float(step - warmup) / float(max(1, train.max_steps - warmup))
    return 0.5 * (1.0 + math.cos(math.pi * progress))


def lr_of_step(step: int, train: TrainConfig) -> float:
    """The learning rate optimiser step ``step`` (0-based) uses."""
    return train.lr * lr_factor(step, train)


def lr_table(trains: Sequence[TrainConfig], start: int, n_steps: int) -> Tensor:
    """Learning rates of steps ``start .. start + n_steps - 1`` (0-based), float64 (E, n_steps).

    Members with the same schedule settings share one row of factors (one Python loop per
    distinct schedule, not per member)."""
    factors: dict[tuple, Tensor] = {}
    rows = []
    for t in trains:
        key = (t.lr_schedule, t.warmup_steps, t.max_steps)
        if key not in factors:
            factors[key] = torch.tensor([lr_factor(s, t) for s in range(start, start + n_steps)],
                                        dtype=torch.float64)
        rows.append(factors[key] * t.lr)
    return torch.stack(rows) if rows else torch.zeros(0, n_steps, dtype=torch.float64)
