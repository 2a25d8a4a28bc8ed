"""Copy, reverse and sort for any list length; a seeded disjoint sample when lists are too many."""

import itertools

import pytest
import torch

from listcopy.config import Config, ConfigError, TaskConfig, parse_model_name
from listcopy.task import dataset


def hand_targets(lst, kind):
    if kind == "copy":
        return list(lst)
    if kind == "reverse":
        return list(reversed(lst))
    return sorted(lst)


@pytest.mark.parametrize("kind", ["copy", "reverse", "sort"])
@pytest.mark.parametrize("n, L", [(5, 1), (4, 3), (3, 4)])
def test_targets_against_a_hand_written_reference(kind, n, L):
    task = TaskConfig(n_digits=n, list_len=L, kind=kind, train_frac=0.5)
    data = dataset(task)
    seen = set()
    for inp, tgt in zip(data.inputs.tolist(), data.targets.tolist()):
        digits = inp[:L]
        assert inp[L:] == [n] * (L + 1)  # SEP at the separator and every output position
        assert tgt == digits + [n] + hand_targets(digits, kind)
        seen.add(tuple(digits))
    assert seen == set(itertools.product(range(n), repeat=L))


def test_large_spaces_are_a_seeded_disjoint_sample_of_the_asked_size():
    task = TaskConfig(n_digits=100, list_len=4, n_samples=5000, kind="sort")  # 10^8 lists
    assert task.sampled and task.n_lists == 5000 and (task.n_train, task.n_val) == (4000, 1000)
    a, b = dataset(task), dataset(task)
    assert torch.equal(a.inputs, b.inputs)  # seeded
    train = {tuple(r) for r in a.train_inputs[:, :4].tolist()}
    val = {tuple(r) for r in a.val_inputs[:, :4].tolist()}
    assert len(train) == 4000 and len(val) == 1000 and not train & val  # distinct, disjoint
    other = dataset(TaskConfig(n_digits=100, list_len=4, n_samples=5000, split_seed=1))
    assert not torch.equal(other.inputs, a.inputs)
    assert (a.targets[:, 5:] == a.inputs[:, :4].sort(1).values).all()


def test_up_to_a_million_lists_are_enumerated():
    assert not TaskConfig(n_digits=1000, list_len=2).sampled
    assert TaskConfig(n_digits=1001, list_len=2).sampled


def test_kind_and_length_in_model_names():
    c = Config().override(["task.kind=sort", "task.list_len=3", "model.d_model=16"])
    assert c.name == "sort_3layer_100dig_16d_3len"
    assert Config.from_dict(parse_model_name(c.name)) == c
    assert Config().name == "3layer_100dig_8d"
    with pytest.raises(ConfigError, match="task.kind"):
        Config().override(["task.kind=shuffle"])
