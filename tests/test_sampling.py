"""Seeded samples of lists: today's draws pinned (existing splits must not change), distinct rows
in the same order as ``torch.unique(dim=0)``, and samples of nearly every list without a crawl."""

import pytest
import torch

from listcopy import task as task_module
from listcopy.config import Config
from listcopy.task import dataset, sample_lists

# rows of the samples listcopy drew before samples were made fast (commit 3cd25f4), by position
PINNED = [
    (["task.n_digits=1001", "task.list_len=2", "task.n_samples=1000"],
     {0: [452, 436], 1: [550, 405], 500: [642, 516], 999: [745, 671]}, 1006589),
    (["task.n_digits=1001", "task.list_len=2", "task.n_samples=500000"],  # half of all lists
     {0: [666, 108], 1: [833, 56], 250000: [866, 787], 499999: [303, 234]}, 500457785),
    (["task.n_digits=10", "task.list_len=7", "task.n_samples=1000", "task.split_seed=3"],
     {0: [7, 6, 5, 7, 8, 0, 3], 1: [7, 7, 4, 5, 3, 5, 2], 500: [7, 5, 4, 9, 1, 8, 3],
      999: [8, 1, 2, 9, 5, 9, 0]}, 31797),
    (["task.n_digits=100", "task.list_len=4", "task.kind=sort"],
     {0: [47, 52, 70, 74], 1: [74, 24, 15, 7], 50000: [57, 21, 15, 78],
      99999: [32, 10, 59, 72]}, 19792154),
    (["task.n_digits=99999999999", "task.list_len=2"],  # too many lists for one int64 code
     {0: [47438280487, 84839137071], 1: [43691149253, 97779804267],
      50000: [42039880290, 87169738858], 99999: [73442681370, 19109549342]}, 10001683165711017),
]


@pytest.mark.parametrize("sets, rows, total", PINNED)
def test_todays_samples_are_unchanged(sets, rows, total):
    lists = sample_lists(Config().override(sets).task)
    for i, row in rows.items():
        assert lists[i].tolist() == row, i
    assert int(lists.sum()) == total


@pytest.mark.parametrize("n, length", [(10, 3), (1001, 2), (100, 12), (2, 70), (3, 40),
                                       (99999999999, 2), (2, 1)])
def test_unique_rows_is_torch_unique(n, length):
    from listcopy.task import unique_rows

    gen = torch.Generator().manual_seed(n + length)
    rows = torch.randint(0, n, (5000, length), generator=gen)
    rows = torch.cat([rows, rows[:300], rows[4000:4100]])  # repeats, apart and adjacent
    assert torch.equal(unique_rows(rows, n), torch.unique(rows, dim=0))


def test_unique_rows_of_nothing():
    from listcopy.task import unique_rows

    assert unique_rows(torch.empty(0, 3, dtype=torch.int64), 5).shape == (0, 3)


@pytest.mark.parametrize("sets", [
    ["task.n_digits=1001", "task.list_len=2", "task.n_samples=1000000"],  # 1,002,001 lists
    ["task.n_digits=1000001", "task.list_len=1", "task.n_samples=1000000"],  # all but one
    ["task.n_digits=1001", "task.list_len=2", "task.n_samples=600000"],  # over half
])
def test_nearly_every_list_is_sampled_without_rounds(monkeypatch, sets):
    """More than half of all lists: no rounds of draws with replacement (the last lists were
    found one in a million draws: > 90 s for the first, days for the second); a sample of
    distinct lists all the same, seeded."""
    calls = []

    def counted(*args, **kwargs):
        calls.append(args)
        if len(calls) > 20:
            raise AssertionError("sampling in rounds")
        return real(*args, **kwargs)

    real = torch.randint
    monkeypatch.setattr(task_module.torch, "randint", counted)
    t = Config().override(sets).task
    lists = sample_lists(t)
    assert calls == []
    assert lists.shape == (t.n_lists, t.list_len)
    assert 0 <= int(lists.min()) and int(lists.max()) < t.n_digits
    assert torch.unique(lists, dim=0).shape[0] == t.n_lists  # distinct
    assert torch.equal(lists, sample_lists(t))  # seeded


def test_a_sample_of_nearly_every_list_splits_disjointly():
    data = dataset(Config().override(["task.n_digits=1001", "task.n_samples=1000000"]))
    train = {tuple(r) for r in data.train_inputs[:, :2].tolist()}
    val = {tuple(r) for r in data.val_inputs[:, :2].tolist()}
    assert not train & val and len(train) + len(val) == 1_000_000
