"""A quorum: once k members of an ensemble (or k runs of a sweep's shape) have reached their
threshold, the others stop at that evaluation, with the weights they had there."""

from __future__ import annotations

import pytest
import torch

from listcopy.config import Config
from listcopy.frontier import seeds_needed
from listcopy.stopping import Quorum
from listcopy.sweep.results import load_rows
from listcopy.sweep.runner import plan, run_sweep
from listcopy.training import train_ensemble

from .sweep.conftest import TINY_BASE, write_grid

TINY = ["task.n_digits=10", "train.batch_size=16", "train.eval_every=50", "train.max_steps=300",
        "train.device=cpu"]


def tiny(seed: int, threshold: float) -> Config:
    """threshold 1e-9: passes at the first evaluation; 1: not within 300 steps of 10 digits."""
    return Config().override(TINY + [f"train.seed={seed}", f"train.early_stop_acc={threshold}"])


@pytest.mark.parametrize("n, need, k", [(8, 0.5, 4), (7, 0.5, 4), (3, 1.0, 3), (10, 0.3, 3),
                                        (1, 0.5, 1), (5, 0.01, 1)])
def test_seeds_needed_is_the_fewest_that_make_the_fraction(n, need, k):
    assert seeds_needed(need, n) == k
    assert k / n >= need and (k - 1) / n < need


def test_the_rest_stop_when_the_quorum_is_reached_with_the_weights_they_had(tmp_path):
    configs = [tiny(0, 1e-9), tiny(1, 1.0), tiny(2, 1e-9), tiny(3, 1.0)]
    runs = train_ensemble(configs, progress=False, quorum=2)
    assert [r.stop_reason for r in runs] == ["early_stop", "quorum", "early_stop", "quorum"]
    assert [r.steps_to_threshold for r in runs] == [50, None, 50, None]
    assert all(r.status == "done" and r.step == 50 for r in runs)
    # the same members trained alone to step 50: the quorum changed nothing before it stopped them
    alone = train_ensemble([c.override(["train.max_steps=50"]) for c in configs[1::2]],
                           progress=False)
    for stopped, reference in zip(runs[1::2], alone):
        assert reference.stop_reason == "max_steps"
        for name, w in stopped.state.items():
            torch.testing.assert_close(w, reference.state[name], rtol=0, atol=0)
        assert [h["acc"] for h in stopped.history] == [h["acc"] for h in reference.history]


def test_an_unreached_quorum_stops_nobody():
    configs = [tiny(0, 1e-9), tiny(1, 1.0), tiny(2, 1.0)]
    runs = train_ensemble(configs, progress=False, quorum=2)
    assert [r.stop_reason for r in runs] == ["early_stop", "max_steps", "max_steps"]
    assert [r.step for r in runs] == [50, 300, 300]


def test_the_quorum_rule_counts_finished_runs():
    class R:
        def __init__(self, passed, status):
            self.steps_to_threshold, self.status, self.stop_reason = passed, status, None

    runs = [R(100, "done"), R(None, "done"), R(None, "running"), R(None, "running")]
    rule = Quorum(2, runs)
    assert not rule.reached()
    runs[2].steps_to_threshold, runs[2].status = 200, "done"
    assert rule.reached()
    rule.stop(runs)
    assert [r.stop_reason for r in runs] == [None, None, None, "quorum"]
    assert Quorum(0, []).reached()


SPECS = """
seeds = "0-1"
[[specs]]
name = "passes"
"train.early_stop_acc" = 1e-9
{second}
"""
SECOND = """[[specs]]
name = "never"
"train.early_stop_acc" = 1.0
"""
BASE = TINY_BASE.replace('device = "cpu"', 'device = "cpu"\nmax_steps = 300')


def test_a_sweep_shape_is_one_group_and_stops_at_its_quorum(tmp_path):
    grid = write_grid(tmp_path / "g.toml", SPECS.format(second=SECOND), BASE)
    p = plan(grid, tmp_path / "s", workers=2, quorum=2, progress=False)
    assert len(p.groups) == 1 and len(p.groups[0]) == 4 and p.threads >= 1
    assert len(plan(grid, tmp_path / "s", workers=2, progress=False).groups) == 2
    run_sweep(grid, tmp_path / "s", workers=0, quorum=2, progress=False)
    rows = {(r["seed"], r["stop_reason"], r["steps"], r["steps_to_threshold"])
            for r in load_rows(tmp_path / "s")}
    assert rows == {(0, "early_stop", 50, 50), (1, "early_stop", 50, 50),
                    (0, "quorum", 50, None), (1, "quorum", 50, None)}


def test_a_sweep_quorum_counts_the_shapes_runs_finished_before(tmp_path):
    out = tmp_path / "s"
    first = write_grid(tmp_path / "a.toml", SPECS.format(second=""), BASE)
    run_sweep(first, out, workers=0, progress=False)  # two runs pass at step 50
    both = write_grid(tmp_path / "b.toml", SPECS.format(second=SECOND), BASE)
    run_sweep(both, out, workers=0, quorum=2, progress=False)
    new = [r for r in load_rows(out) if r["stop_reason"] != "early_stop"]
    assert [(r["stop_reason"], r["steps"]) for r in new] == [("quorum", 50)] * 2
    run_sweep(both, tmp_path / "t", workers=0, quorum=3, progress=False)
    late = [r for r in load_rows(tmp_path / "t") if r["stop_reason"] != "early_stop"]
    assert [(r["stop_reason"], r["steps"]) for r in late] == [("max_steps", 300)] * 2
