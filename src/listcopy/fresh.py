"""Fresh training lists (``train.fresh_data``): a seeded stream, never a validation list.

Each step trains on ``batch_size`` lists drawn uniformly (with replacement) from every list of the
task that is not in the validation set: random digits from the member's own generator, with the
validation lists rejected and drawn again. For list spaces too large to enumerate (the validation
set is then part of a seeded sample, task.py) this is the only way to see more than the sample.

Membership is tested on one int64 key per list: the list's index in ``itertools.product`` order
where ``n_digits ** list_len`` fits in 63 bits (exact), else a 64-bit hash. A training list whose
hash equals a validation list's is rejected too, so no validation list can ever be drawn (a
collision only removes, with probability about n_val / 2**64, one more list from the stream).
"""

from __future__ import annotations

import torch
from torch import Tensor

from .config import TaskConfig

_MIX = (0x9E3779B97F4A7C15 - (1 << 64), 0x1000193)  # odd multipliers (as signed int64)


def list_keys(lists: Tensor, n_digits: int) -> Tensor:
    """One int64 key per list (rows of ``lists``, int64 (n, L)): equal lists, equal keys; distinct
    lists, distinct keys wherever ``n_digits ** L < 2**63``."""
    L = lists.shape[1]
    if n_digits**L < 2**63:
        powers = torch.tensor([n_digits ** (L - 1 - i) for i in range(L)], dtype=torch.int64)
        return (lists * powers).sum(1)
    key = torch.zeros(lists.shape[0], dtype=torch.int64)
    for i in range(L):  # int64 products wrap around: a hash
        key = key * _MIX[0] + (lists[:, i] + 1) * _MIX[1]
        key = key ^ (key >> 29)
    return key


class FreshLists:
    """One member's stream of training lists, disjoint from ``val_lists`` (int64 (n_val, L))."""

    def __init__(self, task: TaskConfig, val_lists: Tensor, generator: torch.Generator):
        self.task, self.generator = task, generator
        self.val_keys = list_keys(val_lists.cpu(), task.n_digits).sort().values

    def is_validation(self, lists: Tensor) -> Tensor:
        """bool (n,): which of ``lists`` have a validation list's key."""
        keys = list_keys(lists, self.task.n_digits)
        if self.val_keys.numel() == 0:
            return torch.zeros_like(keys, dtype=torch.bool)
        at = torch.searchsorted(self.val_keys, keys).clamp(max=self.val_keys.numel() - 1)
        return self.val_keys[at] == keys

    def draw(self, n: int) -> Tensor:
        """The stream's next ``n`` lists, int64 (n, L), on the CPU."""
        out, have = [], 0
        L, d = self.task.list_len, self.task.n_digits
        while have < n:
            want = n - have
            lists = torch.randint(0, d, (want + want // 4 + 16, L), generator=self.generator)
            lists = lists[~self.is_validation(lists)][:want]
            out.append(lists)
            have += lists.shape[0]
        return torch.cat(out)

    def state(self) -> dict[str, Tensor]:
        return {"rng.fresh": self.generator.get_state()}

    def load_state(self, tensors: dict[str, Tensor]) -> None:
        self.generator.set_state(tensors["rng.fresh"])
