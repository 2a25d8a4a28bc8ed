"""Where each training step's lists come from, for one member and for an ensemble.

``BatchOrder`` is one member's seed-style order: the DataLoader(shuffle=True, drop_last=True) of
the training set, whose first epoch ``itertools.cycle`` repeats (or, with ``train.reshuffle``, a
new order each epoch). ``EpochBatches`` stacks the members' orders for the engine. With
``train.fresh_data``, ``FreshBatches`` draws new lists every step from each member's
``FreshLists`` stream (fresh.py) instead.

Both group sources cut a stretch of steps into pieces the engine trains in one call: the rows of
a table of inputs and output targets, and which rows each member trains on at each step.
"""

from __future__ import annotations

from typing import Iterator, NamedTuple, Sequence

import torch
from torch import Tensor

from .config import TaskConfig
from .fresh import FreshLists
from .task import Dataset, sequences

FRESH_ROWS = 1 << 20  # at most this many fresh lists in one piece (E * steps * batch)


class BatchOrder:
    """One member's batch sequence: the seed's DataLoader(shuffle=True, drop_last=True) order."""

    def __init__(self, generator: torch.Generator, n_train: int, batch_size: int, reshuffle: bool):
        self.generator = generator
        self.n_train, self.batch_size, self.reshuffle = n_train, batch_size, reshuffle
        self.n_batches = n_train // batch_size
        self.epoch = -1
        self.perm: Tensor | None = None

    def epoch_of(self, step: int) -> int:
        """Which epoch's permutation step ``step`` (0-based) draws from."""
        return step // self.n_batches if self.reshuffle else 0

    def batches(self, epoch: int) -> Tensor:
        """Indices into the training set, int64 (n_batches, batch_size), for ``epoch``."""
        while self.epoch < epoch:
            torch.empty((), dtype=torch.int64).random_(generator=self.generator)  # loader base seed
            seed = int(torch.empty((), dtype=torch.int64).random_(generator=self.generator))
            perm = torch.randperm(self.n_train, generator=torch.Generator().manual_seed(seed))
            self.perm = perm[: self.n_batches * self.batch_size].view(self.n_batches, self.batch_size)
            self.epoch += 1
        assert self.perm is not None
        return self.perm

    def state(self) -> dict[str, Tensor]:
        assert self.perm is not None
        return {"rng.generator": self.generator.get_state(), "rng.perm": self.perm,
                "rng.epoch": torch.tensor(self.epoch)}

    def load_state(self, tensors: dict[str, Tensor]) -> None:
        self.generator.set_state(tensors["rng.generator"])
        self.perm = tensors["rng.perm"]
        self.epoch = int(tensors["rng.epoch"])


class Piece(NamedTuple):
    """``n_steps`` steps the engine trains in one call (see engine.backend.Stretch)."""

    inputs: Tensor  # (N, T)
    targets: Tensor  # (N, L) at the output positions
    batches: Tensor  # (E, n_batches, B) rows of inputs / targets
    batch0: int
    n_steps: int


class EpochBatches:
    """The members' seed-style orders over the shared training set, stacked (E, n_batches, B)."""

    def __init__(self, orders: Sequence[BatchOrder], data: Dataset, device: torch.device):
        self.orders, self.device = list(orders), device
        L = data.task.list_len
        self.inputs = data.train_inputs.contiguous()
        self.targets = data.train_targets[:, L + 1:].contiguous()
        self.epoch, self.batches = -1, torch.empty(0)

    def stretch_end(self, step: int) -> int | None:
        """Where a stretch from ``step`` must end at the latest (an epoch's end when reshuffling)."""
        o = self.orders[0]  # all members share n_batches: epochs align
        return (step // o.n_batches + 1) * o.n_batches if o.reshuffle else None

    def pieces(self, step: int, n_steps: int, active: Tensor) -> Iterator[Piece]:
        o = self.orders[0]
        if o.epoch_of(step) != self.epoch:
            self.epoch = o.epoch_of(step)
            self.batches = torch.stack([m.batches(self.epoch) for m in self.orders]).to(self.device)
        yield Piece(self.inputs, self.targets, self.batches, step % o.n_batches, n_steps)


class FreshBatches:
    """Every step, ``batch_size`` new lists per member from its own ``FreshLists`` stream."""

    def __init__(self, streams: Sequence[FreshLists], task: TaskConfig, batch_size: int,
                 device: torch.device):
        self.streams, self.task, self.batch_size, self.device = list(streams), task, batch_size, device

    def stretch_end(self, step: int) -> int | None:
        return None

    def pieces(self, step: int, n_steps: int, active: Tensor) -> Iterator[Piece]:
        E, B = len(self.streams), self.batch_size
        per_piece = max(1, FRESH_ROWS // (E * B))
        on = active.reshape(-1).tolist()
        for done in range(0, n_steps, per_piece):
            k = min(per_piece, n_steps - done)
            lists = torch.zeros(E, k * B, self.task.list_len, dtype=torch.int64)
            for e, stream in enumerate(self.streams):
                if on[e]:  # a stopped member's stream stands still
                    lists[e] = stream.draw(k * B)
            inputs, targets = sequences(lists.reshape(E * k * B, -1), self.task)
            rows = torch.arange(E * k * B, device=self.device).view(E, k, B)
            L = self.task.list_len
            yield Piece(inputs.to(self.device), targets[:, L + 1:].contiguous().to(self.device),
                        rows, 0, k)
