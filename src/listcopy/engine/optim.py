"""AdamW state for E members: the two moments (E, P) and the step count, and the update.

The update is ``torch.optim.AdamW``'s single-tensor algorithm with its defaults, over (E, P) at
once: AdamW is elementwise, so this is E independent optimisers, each with its own learning rate
and weight decay, passed into every step (a schedule passes each step its own). The kernel backend
runs the same update in C on these buffers. ``clip_grad_norm_`` is
``torch.nn.utils.clip_grad_norm_`` for each member's row of the gradient. Training asks for the state through
:meth:`AdamW.member_states` / :meth:`AdamW.load_member_states` (checkpoints, resume).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import torch
from torch import Tensor

BETAS = (0.9, 0.999)  # torch.optim.AdamW defaults, as the seed uses
EPS = 1e-8
STATE_KEYS = ("exp_avg", "exp_avg_sq")  # a member's state, as member_states gives it


@dataclass
class AdamW:
    """Moments ``exp_avg``, ``exp_avg_sq`` (E, P) and ``step``, the steps taken so far (shared:
    members that train together step together; a stopped member's weights and moments stay put)."""

    exp_avg: Tensor
    exp_avg_sq: Tensor
    step: int = 0

    @classmethod
    def zeros(cls, n_members: int, size: int, device: torch.device) -> "AdamW":
        return cls(torch.zeros(n_members, size, device=device),
                   torch.zeros(n_members, size, device=device))

    def take(self, idx: Tensor) -> "AdamW":
        """Members ``idx`` as a new state of copies."""
        return AdamW(self.exp_avg[idx], self.exp_avg_sq[idx], self.step)

    def put(self, idx: Tensor, sub: "AdamW") -> None:
        """Write ``sub`` (from :meth:`take`, stepped since) back to members ``idx``."""
        self.exp_avg[idx] = sub.exp_avg
        self.exp_avg_sq[idx] = sub.exp_avg_sq
        self.step = sub.step

    @torch.no_grad()
    def update_(self, param: Tensor, grad: Tensor, lr: Tensor, weight_decay: Tensor) -> None:
        """One AdamW step of every member, in place: ``param``, ``grad`` (E, P); ``lr``,
        ``weight_decay`` (E, 1) in the parameters' dtype."""
        beta1, beta2 = BETAS
        self.step += 1
        self.exp_avg.lerp_(grad, 1 - beta1)
        self.exp_avg_sq.mul_(beta2).add_((1 - beta2) * grad * grad)
        step_size = lr / (1 - beta1**self.step)
        denom = (self.exp_avg_sq.sqrt() / math.sqrt(1 - beta2**self.step)).add_(EPS)
        param.mul_(1 - lr * weight_decay).sub_(step_size * self.exp_avg / denom)

    def member_states(self, members: Sequence[int]) -> list[dict[str, Tensor]]:
        """Each member's moments (``STATE_KEYS``), copied to the host at once."""
        if not members:
            return []
        idx = torch.tensor(list(members), device=self.exp_avg.device)
        avg, avg_sq = self.exp_avg[idx].cpu(), self.exp_avg_sq[idx].cpu()
        return [{"exp_avg": avg[j].clone(), "exp_avg_sq": avg_sq[j].clone()}
                for j in range(len(members))]

    def load_member_states(self, states: Sequence[dict[str, Tensor]], step: int) -> None:
        """Every member's moments from ``states`` (as :meth:`member_states` gives them), and the
        step count they were saved at."""
        if len(states) != self.exp_avg.shape[0]:
            raise ValueError(f"{len(states)} optimiser states for {self.exp_avg.shape[0]} members")
        for key in STATE_KEYS:
            getattr(self, key).copy_(torch.stack([s[key] for s in states]))
        self.step = step


@torch.no_grad()
def clip_grad_norm_(grad: Tensor, max_norm: Tensor, spans: Sequence[tuple[int, int]]) -> Tensor:
    """Scale each member's gradient row (``grad`` (E, P), in place) as ``clip_grad_norm_`` does
    over its parameters: the 2-norm of the parameters' 2-norms (``spans``: each parameter's
    [start, stop) in a row), then a factor ``max_norm / (norm + 1e-6)`` at most 1. Members whose
    ``max_norm`` (E,) is 0 are left as they are. Returns the total norms before clipping (E,)."""
    norms = torch.stack([torch.linalg.vector_norm(grad[:, a:b], 2, dim=1) for a, b in spans])
    total = torch.linalg.vector_norm(norms, 2, dim=0)
    coef = (max_norm / (total + 1e-6)).clamp(max=1.0)
    grad.mul_(torch.where(max_norm > 0, coef, torch.ones_like(coef))[:, None])
    return total
