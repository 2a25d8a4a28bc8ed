import itertools

import pytest
import torch

from listcopy.config import Config, TaskConfig
from listcopy.task import (all_lists, attention_mask, dataset, seed_generator, skip_randperm,
                           split_permutation)

NEG = float("-inf")


def test_split_is_the_seeds_randperm():
    torch.manual_seed(0)  # the notebook: manual_seed(0), then randperm(n_data) in the data cell
    expected = torch.randperm(10_000)
    assert torch.equal(split_permutation(TaskConfig()), expected)


def test_dataset_matches_the_notebooks_construction():
    data = dataset(Config())
    lists = torch.tensor(list(itertools.product(range(100), repeat=2)))
    torch.manual_seed(0)
    perm = torch.randperm(len(lists))
    targets = torch.cat([lists, torch.full((len(lists), 1), 100), lists], 1)[perm]
    inputs = targets.clone()
    inputs[:, 3:] = 100
    assert torch.equal(data.targets, targets) and torch.equal(data.inputs, inputs)
    assert data.train_inputs.shape == (8000, 5) and data.val_inputs.shape == (2000, 5)
    # the notebook's printed first training example
    assert data.train_inputs[0].tolist() == [60, 44, 100, 100, 100]
    assert data.train_targets[0].tolist() == [60, 44, 100, 60, 44]


@pytest.mark.parametrize("n, L", [(3, 1), (5, 3), (100, 2)])
def test_all_lists_is_itertools_product(n, L):
    expected = torch.tensor(list(itertools.product(range(n), repeat=L)))
    assert torch.equal(all_lists(TaskConfig(n_digits=n, list_len=L)), expected)


def test_mask_is_the_reference_table():
    expected = torch.tensor([
        [0, NEG, NEG, NEG, NEG],
        [0, NEG, NEG, NEG, NEG],
        [0, 0, NEG, NEG, NEG],
        [NEG, NEG, 0, NEG, NEG],
        [NEG, NEG, 0, 0, NEG],
    ])
    assert torch.equal(attention_mask(2), expected)


@pytest.mark.parametrize("L", [1, 2, 3, 5])
def test_mask_rule_for_any_list_len(L):
    """Hand rule: d1 sees itself; other inputs and SEP see strictly earlier inputs; outputs see
    SEP and strictly earlier outputs, never an input digit."""
    T = 2 * L + 1
    mask = attention_mask(L)
    for q in range(T):
        for k in range(T):
            if q == 0:
                allowed = k == 0
            elif q <= L:
                allowed = k < q
            else:
                allowed = L <= k < q
            assert (mask[q, k] == 0) == allowed, (q, k)


def test_seed_generator_has_made_the_split_draw():
    task = TaskConfig()
    g = seed_generator(task, 0)
    torch.manual_seed(0)
    torch.randperm(10_000)
    assert torch.equal(torch.randn(5, generator=g), torch.randn(5))


@pytest.mark.parametrize("n", [0, 1, 2, 3, 101, 8_000, 10_000, 90_000])
def test_skip_randperm_leaves_the_generator_where_randperm_does(n):
    for seed in (0, 7):
        shuffled, skipped = (torch.Generator().manual_seed(seed) for _ in range(2))
        torch.randperm(n, generator=shuffled)
        skip_randperm(n, skipped)
        assert torch.equal(shuffled.get_state(), skipped.get_state())
        # and what comes next: the init's normal draws, the loader's 64-bit seeds
        assert torch.equal(torch.empty(40).normal_(generator=shuffled),
                           torch.empty(40).normal_(generator=skipped))
        assert torch.equal(torch.empty((), dtype=torch.int64).random_(generator=shuffled),
                           torch.empty((), dtype=torch.int64).random_(generator=skipped))
