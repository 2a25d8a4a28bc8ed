"""The task: pass a list of digits through the SEP token (copy it, reverse it or sort it).

    position:  0 .. L-1      L      L+1 .. 2L
    input:     d1 .. dL      SEP    SEP .. SEP
    target:    d1 .. dL      SEP    o1  .. oL      (loss and accuracy on the L output positions)

    copy (the seed): o = d;  reverse: o = d reversed;  sort: o = d ascending.

Up to ``ENUMERATE_LIMIT`` lists, every list is enumerated in ``itertools.product`` order, shuffled
with ``randperm`` from a generator seeded with ``task.split_seed``, and split: the first
``int(train_frac * n)`` lists train. Beyond that, ``n_samples`` distinct lists are drawn from that
generator instead (``sample_lists``), so train and validation are disjoint. The attention mask keeps outputs from ever
seeing the inputs: the whole list must pass through SEP.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from .config import Config, TaskConfig


def all_lists(task: TaskConfig) -> torch.Tensor:
    """Every list of ``list_len`` digits, in ``itertools.product(range(n_digits), repeat=L)`` order.

    Returns int64 (n_data, list_len).
    """
    return _digits(torch.arange(task.n_data, dtype=torch.int64), task)


def _powers(task: TaskConfig) -> torch.Tensor:
    """n^(L-1) .. n^0: a list's code is its digits in base n, most significant first."""
    return task.n_digits ** torch.arange(task.list_len - 1, -1, -1, dtype=torch.int64)


def _digits(codes: torch.Tensor, task: TaskConfig) -> torch.Tensor:
    """Codes (N,) -> lists int64 (N, list_len); codes in increasing order are lists in
    lexicographic (``itertools.product``) order."""
    return (codes[:, None] // _powers(task)) % task.n_digits


def sample_lists(task: TaskConfig) -> torch.Tensor:
    """``n_samples`` distinct lists in random order, int64 (n_samples, list_len), seeded by split_seed.

    At most half of all lists: drawn with replacement in rounds (``randint`` of twice what is
    missing), the distinct ones kept in lexicographic order, until there are enough; then a
    ``randperm`` picks and orders them. More than half: rounds would crawl (the last lists are
    found one in many draws), so a ``randperm`` of all the lists' codes picks them instead (another
    sample of the same kind, fast for any size).
    """
    gen = torch.Generator().manual_seed(task.split_seed)
    k = task.n_lists
    if 2 * k > task.n_data:  # then n_data < 2 * 10^6
        return _digits(torch.randperm(task.n_data, generator=gen)[:k], task)
    rows = torch.empty(0, task.list_len, dtype=torch.int64)
    while rows.shape[0] < k:
        fresh = torch.randint(0, task.n_digits, (2 * (k - rows.shape[0]), task.list_len),
                              generator=gen)
        rows = unique_rows(torch.cat([rows, fresh]), task.n_digits)
    return rows[torch.randperm(rows.shape[0], generator=gen)[:k]]


def unique_rows(rows: torch.Tensor, n_digits: int) -> torch.Tensor:
    """``torch.unique(rows, dim=0)`` for rows of digits < ``n_digits``, much faster: each row is
    packed into a few int64 words (digits in base n, most significant first, so that words compare
    as the rows do), sorted by its first word, rows that tie there sorted by all their words, and
    repeats dropped. Same rows, same (lexicographic) order."""
    per_word = max(1, int(63 / math.log2(n_digits)))
    while n_digits**per_word > 2**63 - 1:  # float rounding of the logarithm
        per_word -= 1
    words = [_pack(rows[:, a: a + per_word], n_digits) for a in range(0, rows.shape[1], per_word)]
    order = torch.sort(words[0], stable=True).indices
    first = words[0][order]
    tied = torch.zeros(rows.shape[0], dtype=torch.bool)
    tied[1:] = first[1:] == first[:-1]
    tied[:-1] |= tied[1:].clone()
    if len(words) > 1 and bool(tied.any()):  # ties on the first word: sort those rows by all
        at = tied.nonzero().flatten()
        sub = order[at]
        for word in reversed(words):
            sub = sub[torch.sort(word[sub], stable=True).indices]
        order[at] = sub  # tied blocks keep their place: the first word orders them
    keep = torch.ones(rows.shape[0], dtype=torch.bool)
    if rows.shape[0]:
        same = torch.ones(rows.shape[0] - 1, dtype=torch.bool)
        for word in words:
            w = word[order]
            same &= w[1:] == w[:-1]
        keep[1:] = ~same
    return rows[order[keep]]


def _pack(digits: torch.Tensor, n_digits: int) -> torch.Tensor:
    """Rows of digits (N, m) -> their base-n values (N,), the first digit most significant."""
    out = digits[:, 0].clone()
    for j in range(1, digits.shape[1]):
        out.mul_(n_digits).add_(digits[:, j])
    return out


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
