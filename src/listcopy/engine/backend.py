"""What a backend does for the ensemble (the ``Backend`` protocol), and a stretch of training steps.

Two backends compute the same steps on the ensemble's parameters (params.py) and AdamW state
(optim.py): :class:`~.torch_backend.TorchBackend` (any configuration, any device) and
:class:`~.kernel_backend.KernelBackend` (the compiled CPU kernel, for the seed's constraints).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ContextManager, Protocol

from torch import Tensor

from .optim import AdamW
from .params import Params


@dataclass(frozen=True)
class Stretch:
    """``n_steps`` AdamW steps: member e's step s trains on the rows
    ``batches[e, (batch0 + s) % n_batches]`` of ``inputs`` (N, T) / ``targets`` (N, L).

    batches (E, n_batches, B) int64; lr (E, n_steps) float, the learning rate of each member at each
    step (a schedule's), weight_decay (E,) float (float64 keeps them exact for the kernel; torch
    uses the parameters' dtype); active (E,) bool (stopped members neither change nor cost time).
    Each step's per-member mean loss is added into ``loss_sum`` (E,). ``max_grad_norm`` (E,) float,
    or None: each member's gradient is clipped to that total norm before its step, as
    ``torch.nn.utils.clip_grad_norm_`` over its trainable parameters (0 = not clipped)."""

    inputs: Tensor
    targets: Tensor
    batches: Tensor
    batch0: int
    n_steps: int
    lr: Tensor
    weight_decay: Tensor
    active: Tensor
    loss_sum: Tensor
    max_grad_norm: Tensor | None = None


class Backend(Protocol):
    """How an ensemble's steps, gradients, metrics and logits are computed."""

    name: str  # "torch" or "kernel"

    def train_steps(self, params: Params, optim: AdamW, stretch: Stretch) -> None:
        """Run ``stretch`` in place on ``params`` and ``optim``."""

    def loss_and_grad(self, params: Params, tokens: Tensor,
                      targets: Tensor) -> tuple[Tensor, Tensor]:
        """Per-member mean loss (E,) and its gradient (E, P) on tokens (E, B, T) or (B, T),
        targets (E, B, L) or (B, L) at the output positions."""

    def evaluate(self, params: Params, inputs: Tensor, out_targets: Tensor,
                 active: Tensor | None, chunk: int | None) -> dict[str, Tensor]:
        """``loss``, ``acc``, ``seq_acc`` per member (E,) on inputs (N, T) shared by all members;
        entries of members not ``active`` are left unspecified."""

    def predict(self, params: Params, inputs: Tensor) -> Tensor:
        """Logits at the output positions, (E, N, L, V), for inputs (N, T); no gradient."""

    def host_serial(self) -> ContextManager[None]:
        """A context for a training loop: torch's own ops on one thread where the backend runs
        its threads itself (the kernel), nothing otherwise."""
