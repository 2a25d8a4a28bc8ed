"""The seed's metrics, on output positions only: cross-entropy ``loss``, per-token ``acc`` (the
number the notebook reports), ``seq_acc`` (the whole list right) and ``per_position_acc`` (the
accuracy at o1, o2, ... separately; ``acc`` is their mean)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from .task import Dataset


def output_metrics(logits: Tensor, targets: Tensor) -> dict[str, float]:
    """logits (N, L, V) and targets (N, L) at the output positions -> loss, acc, seq_acc, n_val,
    per_position_acc (a list of L)."""
    right = logits.argmax(-1) == targets
    loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), targets.reshape(-1))
    return {"loss": loss.item(), "acc": right.float().mean().item(),
            "seq_acc": right.all(-1).float().mean().item(), "n_val": int(targets.shape[0]),
            "per_position_acc": right.float().mean(0).tolist()}


@torch.no_grad()
def output_logits(model: torch.nn.Module, data: Dataset, batch_size: int = 4096) -> Tensor:
    """The model's logits (N, L, V) at the output positions of every validation list (any hooks
    attached by the caller stay in effect)."""
    out = data.task.output_slice
    device = next(model.parameters()).device
    return torch.cat([model(data.val_inputs[i: i + batch_size].to(device))[:, out]
                      for i in range(0, data.val_inputs.shape[0], batch_size)])


@torch.no_grad()
def evaluate(model: torch.nn.Module, data: Dataset, batch_size: int = 4096) -> dict[str, float]:
    """Validation metrics of a hooked model (any hooks attached by the caller stay in effect)."""
    logits = output_logits(model, data, batch_size)
    return output_metrics(logits, data.val_targets[:, data.task.output_slice].to(logits.device))
