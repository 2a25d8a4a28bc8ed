"""The task: pass a list of digits through the SEP token (copy it, reverse it or sort it).

    position:  0 .. L-1      L      L+1 .. 2L
    input:     d1 .. dL      SEP    SEP .. SEP
    target:    d1 .. dL      SEP    o1  .. oL      (loss and accuracy on the L output positions)

    copy (the seed): o = d;  reverse: o = d reversed;  sort: o = d ascending.

Up to ``ENUMERATE_LIMIT`` lists, every list is enumerated in ``itertools.product`` order, shuffled
with ``randperm`` from a generator seeded with ``task.split_seed``, and split: the first
``int(train_frac * n)`` lists train. Beyond that, ``n_samples`` distinct lists are drawn from that
generator instead, so train and validation are disjoint. The attention mask keeps outputs from ever
seeing the inputs: the whole list must pass through SEP.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .config import Config, TaskConfig


def all_lists(task: TaskConfig) -> torch.Tensor:
    """Every list of ``list_len`` digits, in ``itertools.product(range(n_digits), repeat=L)`` order.

    Returns int64 (n_data, list_len).
    """
    L, n = task.list_len, task.n_digits
    idx = torch.arange(task.n_data, dtype=torch.int64)
    powers = n ** torch.arange(L - 1, -1, -1, dtype=torch.int64)  # most significant digit first
    return (idx[:, None] // powers) % n


def sample_lists(task: TaskConfig) -> torch.Tensor:
    """``n_samples`` distinct lists in random order, int64 (n_samples, list_len), seeded by split_seed."""
    gen = torch.Generator().manual_seed(task.split_seed)
    k, L = task.n_lists, task.list_len
    rows = torch.empty(0, L, dtype=torch.int64)
    while rows.shape[0] < k:
        fresh = torch.randint(0, task.n_digits, (2 * (k - rows.shape[0]), L), generator=gen)
        rows = torch.unique(torch.cat([rows, fresh]), dim=0)
    return rows[torch.randperm(rows.shape[0], generator=gen)[:k]]


def outputs(lists: torch.Tensor, kind: str) -> torch.Tensor:
    """What the model must write at the output positions, int64 (n, list_len)."""
    if kind == "copy":
        return lists
    if kind == "reverse":
        return lists.flip(1)
    if kind == "sort":
        return lists.sort(1).values
    raise ValueError(f"unknown task kind {kind!r}")


def sequences(lists: torch.Tensor, task: TaskConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """Inputs ``[d.., SEP, SEP..]`` and targets ``[d.., SEP, o..]``, each int64 (n, seq_len)."""
    L = task.list_len
    targets = torch.full((lists.shape[0], task.seq_len), task.sep, dtype=torch.int64)
    targets[:, :L] = lists
    targets[:, L + 1:] = outputs(lists, task.kind)
    inputs = targets.clone()
    inputs[:, L + 1:] = task.sep
    return inputs, targets


def split_permutation(task: TaskConfig) -> torch.Tensor:
    """The seed's shuffle: ``torch.randperm(n)`` right after ``torch.manual_seed(split_seed)``."""
    gen = torch.Generator().manual_seed(task.split_seed)
    return torch.randperm(task.n_data, generator=gen)


def seed_generator(task: TaskConfig, seed: int) -> torch.Generator:
    """The notebook's global generator just after the split, under ``torch.manual_seed(seed)``.

    The seed draws, in order, from one generator: the split's ``randperm(n)``, the model's init,
    then the training DataLoader's two seeds. A training run with seed ``s`` replays that order on
    its own generator, whatever ``split_seed`` is, so with ``split_seed == s`` it is the notebook's
    run and otherwise the same initial weights and batches on another split.
    """
    gen = torch.Generator().manual_seed(seed)
    torch.randperm(task.n_lists, generator=gen)
    return gen


@dataclass(frozen=True)
class Dataset:
    """Shuffled inputs and targets, int64 (n, seq_len); the first ``n_train`` rows train."""

    task: TaskConfig
    inputs: torch.Tensor
    targets: torch.Tensor

    @property
    def train_inputs(self) -> torch.Tensor:
        return self.inputs[: self.task.n_train]

    @property
    def train_targets(self) -> torch.Tensor:
        return self.targets[: self.task.n_train]

    @property
    def val_inputs(self) -> torch.Tensor:
        return self.inputs[self.task.n_train:]

    @property
    def val_targets(self) -> torch.Tensor:
        return self.targets[self.task.n_train:]

    def to(self, device: torch.device | str) -> "Dataset":
        return Dataset(self.task, self.inputs.to(device), self.targets.to(device))


def dataset(config: Config | TaskConfig) -> Dataset:
    """All lists of the task, shuffled and split exactly as the seed does (or a seeded sample)."""
    task = config.task if isinstance(config, Config) else config
    if task.sampled:
        inputs, targets = sequences(sample_lists(task), task)
        return Dataset(task, inputs, targets)
    inputs, targets = sequences(all_lists(task), task)
    perm = split_permutation(task)
    return Dataset(task, inputs[perm], targets[perm])


def attention_mask(list_len: int) -> torch.Tensor:
    """The seed's additive mask, float (seq_len, seq_len), query rows x key columns, 0 = allowed.

    ``triu(-inf)`` with the diagonal, then ``[0, 0] = 0`` (a row of -inf gives NaN), then output
    rows x input-digit columns = -inf. For list_len 2::

              d1    d2    SEP   o1    o2
        d1    0    -inf  -inf  -inf  -inf
        d2    0    -inf  -inf  -inf  -inf
        SEP   0     0    -inf  -inf  -inf
        o1   -inf  -inf   0    -inf  -inf
        o2   -inf  -inf   0     0    -inf
    """
    T = 2 * list_len + 1
    mask = torch.triu(torch.full((T, T), float("-inf")))
    mask[0, 0] = 0.0
    mask[list_len + 1:, :list_len] = float("-inf")
    return mask


def token_labels(list_len: int) -> list[str]:
    """``['d1', 'd2', 'SEP', 'o1', 'o2']`` for list_len 2."""
    digits = [f"d{i + 1}" for i in range(list_len)]
    outputs = [f"o{i + 1}" for i in range(list_len)]
    return digits + ["SEP"] + outputs
