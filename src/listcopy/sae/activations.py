"""Activations for SAEs: read from a model at a site over the task's lists, and served in batches.

``collect`` runs the model over lists in batches and keeps the site's rows (one per list and
position, list-major). ``ActivationBatches`` is the data provider SAELens' trainer consumes: an
endless iterator of ``(batch_size, width)`` tensors, every epoch a fresh order drawn from its own
seeded generator, the last incomplete batch of an epoch dropped (the trainer counts full batches).
"""

from __future__ import annotations

from typing import Iterator

import torch
from torch import Tensor

from ..config import ConfigError
from ..task import Dataset
from .site import Site, read

BATCH_SIZE = 4096


def split_data(data: Dataset, split: str) -> tuple[Tensor, Tensor]:
    """Inputs and targets (N, T) of ``split``: train, val or all lists."""
    if split == "train":
        return data.train_inputs, data.train_targets
    if split == "val":
        return data.val_inputs, data.val_targets
    if split == "all":
        return data.inputs, data.targets
    raise ConfigError(f"split {split!r}: must be train, val or all")


@torch.no_grad()
def collect(model, inputs: Tensor, site: Site, batch_size: int = BATCH_SIZE) -> Tensor:
    """The site's activations over ``inputs`` (N, T): float32 (N * P, width) on the model's device."""
    device = next(model.parameters()).device
    parts: list[Tensor] = []

    def keep(act: Tensor, hook) -> None:
        parts.append(read(act, site).float())

    with model.hooks(fwd_hooks=[(site.hook, keep)]):
        for i in range(0, inputs.shape[0], batch_size):
            model(inputs[i: i + batch_size].to(device))
    return torch.cat(parts)


class ActivationBatches:
    """Endless seeded batches of rows of ``acts``; each epoch is a new permutation."""

    def __init__(self, acts: Tensor, batch_size: int, seed: int):
        if acts.dim() != 2 or acts.shape[0] == 0:
            raise ConfigError(f"activations must be a non-empty (rows, width) matrix, got shape"
                              f" {tuple(acts.shape)}")
        self.acts = acts
        self.batch_size = min(batch_size, acts.shape[0])
        self.generator = torch.Generator().manual_seed(seed)
        self._order: Iterator[Tensor] = iter(())

    def __iter__(self) -> "ActivationBatches":
        return self

    def __next__(self) -> Tensor:
        index = next(self._order, None)
        if index is None:
            self._order = iter(self._epoch())
            index = next(self._order)
        return self.acts[index.to(self.acts.device)]

    def _epoch(self) -> list[Tensor]:
        perm = torch.randperm(self.acts.shape[0], generator=self.generator)
        n = perm.shape[0] // self.batch_size
        return list(perm[: n * self.batch_size].view(n, self.batch_size))
