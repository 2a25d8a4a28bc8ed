"""The task: pass a list of digits through the SEP token (copy it, reverse it or sort it).

    position:  0 .. L-1      L      L+1 .. 2L
    input:     d1 .. dL      SEP    SEP .. SEP      (MASK .. MASK with task.mask_token)
    target:    d1 .. dL      SEP    o1  .. oL      (loss and accuracy on the L output positions)

    copy (the seed): o = d;  reverse: o = d reversed;  sort: o = d ascending.
    tokens: digits 0 .. n_digits-1, SEP = n_digits (with a MASK token: MASK = n_digits, SEP =
    n_digits + 1, as the research line's).

Up to ``ENUMERATE_LIMIT`` lists, every list is enumerated in ``itertools.product`` order, shuffled
with ``randperm`` from a generator seeded with ``task.split_seed``, and split: the first
``int(train_frac * n)`` lists train. The research line's options (its ``get_dataset``), with the
same draws: ``no_dupes`` leaves out every list whose elements are all equal before the shuffle;
``train_dupes_only`` shuffles and splits the others, appends those lists to the training part and
shuffles it again with a second ``randperm``. Beyond ``ENUMERATE_LIMIT``, ``n_samples`` distinct
lists are drawn from that generator instead (``sample_lists``), so train and validation are disjoint.

The attention masks keep outputs from ever seeing the inputs: the whole list must pass through SEP.
With ``model.layer0_mask`` (the line's), layer 0 lets each output attend only to itself and then
zeroes its pattern row, so outputs receive nothing in layer 0.
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
    """Inputs ``[d.., SEP, SEP..]`` (``[d.., SEP, MASK..]``) and targets ``[d.., SEP, o..]``, each
    int64 (n, seq_len)."""
    L = task.list_len
    targets = torch.full((lists.shape[0], task.seq_len), task.sep, dtype=torch.int64)
    targets[:, :L] = lists
    targets[:, L + 1:] = outputs(lists, task.kind)
    inputs = targets.clone()
    inputs[:, L + 1:] = task.fill
    return inputs, targets


def constant_positions(task: TaskConfig) -> tuple[int, ...]:
    """Positions whose input token is the same in every sequence of :func:`sequences`: SEP and
    the outputs' fill (SEP or MASK)."""
    return tuple(range(task.list_len, task.seq_len))


def is_dupe(lists: torch.Tensor) -> torch.Tensor:
    """Lists whose elements are all equal, bool (n,)."""
    return (lists == lists[:, :1]).all(1)


def split_draws(task: TaskConfig, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The split's draws from ``gen``, in order: ``randperm(n_split)`` (every list, or the
    non-dupes), then with ``train_dupes_only`` the ``randperm(n_train)`` that reshuffles the
    training part once the dupes are appended (else None)."""
    perm = torch.randperm(task.n_split, generator=gen)
    again = torch.randperm(task.n_train, generator=gen) if task.train_dupes_only else None
    return perm, again


def split_permutation(task: TaskConfig) -> torch.Tensor:
    """The seed's shuffle: ``torch.randperm(n)`` right after ``torch.manual_seed(split_seed)``."""
    return split_draws(task, torch.Generator().manual_seed(task.split_seed))[0]


def skip_randperm(n: int, gen: torch.Generator) -> None:
    """Advance ``gen`` as ``torch.randperm(n, generator=gen)`` does, without the permutation.

    torch's CPU randperm (n below 2^32 / 20) is a Fisher-Yates shuffle that takes one 32-bit draw
    for each of its first n - 1 positions; an int32 ``random_`` takes one 32-bit draw per element,
    in order. A third less time than the shuffle (tests/test_task.py holds the two to the same
    generator state), which an ensemble of thousands of seeds pays once per member."""
    if n > 1:
        torch.empty(n - 1, dtype=torch.int32).random_(generator=gen)


def seed_generator(task: TaskConfig, seed: int) -> torch.Generator:
    """The notebook's global generator just after the split, under ``torch.manual_seed(seed)``.

    The seed draws, in order, from one generator: the split's ``randperm(n)``, the model's init,
    then the training DataLoader's two seeds. A training run with seed ``s`` replays that order on
    its own generator, whatever ``split_seed`` is, so with ``split_seed == s`` it is the notebook's
    run and otherwise the same initial weights and batches on another split. The research line's
    get_dataset draws the same way (``split_draws``: with ``train_dupes_only`` a second randperm).
    """
    gen = torch.Generator().manual_seed(seed)
    if task.sampled:
        skip_randperm(task.n_lists, gen)
    else:  # split_draws' draws, their permutations unused
        skip_randperm(task.n_split, gen)
        if task.train_dupes_only:
            skip_randperm(task.n_train, gen)
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

    def first_val(self, n: int | None) -> "Dataset":
        """The same split with only its first ``n`` validation lists (None, or n at least their
        number: all of them). The split is a random permutation, so those lists are a uniform
        sample, and the same one on every call."""
        if n is None or n >= self.val_inputs.shape[0]:
            return self
        end = self.task.n_train + n
        return Dataset(self.task, self.inputs[:end], self.targets[:end])


def dataset(config: Config | TaskConfig) -> Dataset:
    """All lists of the task, shuffled and split exactly as the seed does (or a seeded sample), or
    as the research line's get_dataset does with its dupes options."""
    task = config.task if isinstance(config, Config) else config
    if task.sampled:
        inputs, targets = sequences(sample_lists(task), task)
        return Dataset(task, inputs, targets)
    lists = all_lists(task)
    dupe = is_dupe(lists)
    split = lists[~dupe] if task.no_dupes or task.train_dupes_only else lists
    perm, again = split_draws(task, torch.Generator().manual_seed(task.split_seed))
    rows = split[perm]
    if again is not None:  # the non-dupes' training part, the dupes appended, reshuffled
        n = int(task.train_frac * task.n_split)
        rows = torch.cat([torch.cat([rows[:n], lists[dupe]])[again], rows[n:]])
    inputs, targets = sequences(rows, task)
    return Dataset(task, inputs, targets)


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


def layer0_attention_mask(list_len: int) -> torch.Tensor:
    """The research line's layer-0 mask: the seed's, but each output row allows only itself. For
    list_len 2 the rows o1, o2 are ``[-inf -inf -inf 0 -inf]`` and ``[-inf -inf -inf -inf 0]``;
    those rows' patterns are then zeroed (``LayerMask.silent``)."""
    mask = attention_mask(list_len)
    outputs = torch.arange(list_len + 1, 2 * list_len + 1)
    mask[outputs] = float("-inf")
    mask[outputs, outputs] = 0.0
    return mask


@dataclass(frozen=True)
class LayerMask:
    """One layer's masking: ``scores`` (T, T) is added to the attention scores (0 allowed,
    -inf not); the pattern rows of ``silent`` (bool (T,)) are then set to zero."""

    scores: torch.Tensor
    silent: torch.Tensor

    @property
    def scored(self) -> torch.Tensor:
        """bool (T, T): query row i has a finite score for key j (causal, the mask)."""
        T = self.scores.shape[0]
        return (self.scores == 0) & torch.tril(torch.ones(T, T, dtype=torch.bool))

    @property
    def allowed(self) -> torch.Tensor:
        """bool (T, T): query row i receives from key j (scored, and the row not silent)."""
        return self.scored & ~self.silent[:, None]


def layer_masks(list_len: int, n_layers: int, layer0_mask: bool = False) -> tuple[LayerMask, ...]:
    """Each layer's masking: the seed's mask in every layer, or with ``layer0_mask`` the line's
    in layer 0 (its output rows silent)."""
    T = 2 * list_len + 1
    quiet = torch.zeros(T, dtype=torch.bool)
    layers = [LayerMask(attention_mask(list_len), quiet)] * n_layers
    if layer0_mask:
        silent = quiet.clone()
        silent[list_len + 1:] = True
        layers[0] = LayerMask(layer0_attention_mask(list_len), silent)
    return tuple(layers)


def model_masks(config: Config) -> tuple[LayerMask, ...]:
    """:func:`layer_masks` of ``config``'s model."""
    return layer_masks(config.task.list_len, config.model.n_layers, config.model.layer0_mask)


def token_labels(list_len: int) -> list[str]:
    """``['d1', 'd2', 'SEP', 'o1', 'o2']`` for list_len 2."""
    digits = [f"d{i + 1}" for i in range(list_len)]
    outputs = [f"o{i + 1}" for i in range(list_len)]
    return digits + ["SEP"] + outputs
