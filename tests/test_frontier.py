"""The frontier search against a known oracle and against an exhaustive sweep of real training."""

import functools

import pytest

from listcopy.config import Config
from listcopy.frontier import (Search, exhaustive_minimal, search_frontier, seeds_needed,
                               train_in_process)


def oracle(threshold_of):
    """evaluate() whose seeds pass exactly when d_model >= threshold_of(config)."""
    calls = []

    def evaluate(configs):
        calls.extend(configs)
        return [{"steps_to_threshold": 100 if c.model.d_model >= threshold_of(c) else None}
                for c in configs]

    return evaluate, calls


@pytest.mark.parametrize("true_d", [1, 2, 3, 5, 8, 13, 31, 32, 33, 100])
def test_search_finds_the_threshold_of_a_monotone_oracle(true_d):
    evaluate, calls = oracle(lambda c: true_d)
    [point] = search_frontier(Config(), {"task.n_digits": [10]}, [0, 1], evaluate, d_max=128)
    assert point.minimal_d_model == true_d
    tried = sorted({c.model.d_model for c in calls})
    assert len(tried) <= 2 * 8  # log-many trainings, not 128


def test_search_respects_n_heads_and_d_max():
    evaluate, _ = oracle(lambda c: 7)
    [p] = search_frontier(Config().override(["model.n_heads=2"]), {"task.n_digits": [10]}, [0],
                          evaluate, d_max=64)
    assert p.minimal_d_model == 8  # multiples of n_heads only
    evaluate, _ = oracle(lambda c: 1000)
    [p] = search_frontier(Config(), {"task.n_digits": [10]}, [0], evaluate, d_max=64)
    assert p.minimal_d_model is None and max(p.tried) == 64


def test_half_the_seeds_is_enough():
    s = Search({}, 64)
    s.tried = {1: 0.0, 2: 0.25, 4: 0.5}
    s.tried[3] = 0.49
    assert s.next_d() is None and s.minimal == 4


def test_points_and_bits():
    evaluate, _ = oracle(lambda c: c.task.n_digits // 2)
    points = search_frontier(Config(), {"task.n_digits": [8, 20], "task.list_len": [1, 2]},
                             [0], evaluate, d_max=64)
    assert [p.minimal_d_model for p in points] == [4, 4, 10, 10]
    assert points[3].bits == pytest.approx(2 * 4.321928, abs=1e-5)


@pytest.mark.slow
def test_search_equals_an_exhaustive_sweep_on_a_tiny_space():
    """Real training on small spaces (16 and 20 digits, lists of 2; the smaller spaces of 4-8
    digits leave too few held-out lists to generalise to): the searched minimum is the one an
    exhaustive sweep over d_model = 1..16 finds, also when a width's seeds stop at the quorum."""
    base = Config().override(["train.max_steps=4000", "train.eval_every=50", "train.lr=0.01",
                              "train.early_stop_acc=0.95"])
    axes = {"task.n_digits": [16, 20]}
    seeds = [0, 1, 2, 3]
    points = search_frontier(base, axes, seeds, train_in_process, d_max=16)
    assert all(p.minimal_d_model is not None for p in points)  # a real frontier, not "> 16"
    decided = functools.partial(train_in_process, quorum=seeds_needed(0.5, len(seeds)))
    fast = search_frontier(base, axes, seeds, decided, d_max=16)
    for p, q in zip(points, fast):
        expected = exhaustive_minimal(base, p.point, seeds, train_in_process, range(1, 17))
        assert p.minimal_d_model == expected, (p.point, p.tried)
        assert q.minimal_d_model == expected, (q.point, q.tried)
        assert q.tried.keys() == p.tried.keys()
        assert all(q.tried[d] <= p.tried[d] for d in p.tried)  # a lower bound where it passed
