"""Swapped pairs: partners found by hand; a hand-built model whose SEP weights are known in closed
form gives every statistic exactly; the AUC against its definition by counting."""

import itertools

import numpy as np
import pytest
import torch

from listcopy import Config
from listcopy.analysis.paths import NotApplicable
from listcopy.analysis.swapped import auc, swap_partners, swapped_pairs
from listcopy.model import build_model
from listcopy.task import dataset

from .handbuilt import layer0_weights, positional_model


def test_partners():
    lists = torch.tensor([[1, 2, 0], [2, 1, 0], [3, 3, 1], [4, 5, 1], [5, 4, 2], [0, 9, 9]])
    xs, ps = swap_partners(lists, 0, 1)
    assert xs.tolist() == [0] and ps.tolist() == [1]  # (4,5,1) has no (5,4,1); (3,3) is no pair
    xs, ps = swap_partners(lists, 1, 2)
    assert xs.tolist() == [] and ps.tolist() == []


def test_auc_counts_pairs():
    rng = np.random.default_rng(0)
    score = rng.integers(0, 5, 40).astype(float)  # ties on purpose
    pos = rng.random(40) < 0.4
    pairs = [1.0 if a > b else 0.5 if a == b else 0.0
             for a, b in itertools.product(score[pos], score[~pos])]
    assert auc(score, pos) == pytest.approx(np.mean(pairs))


@pytest.mark.parametrize("g", [(1.5, -0.5), (-1.0, 0.5)])
def test_known_weights(g):
    model, config, g_all = positional_model(g=g)
    alpha = layer0_weights(config, g_all)  # SEP -> (d1, d2), the same for every list
    r = swapped_pairs(model, config).to_dict()
    val = dataset(config).val_inputs[:, :2].tolist()
    want_pairs = sum(1 for a, b in val if a < b and [b, a] in val)
    assert r["n_pairs"] == want_pairs > 0 and r["positions"] == ["d1", "d2"]
    assert r["position_order_kept"] == 1.0
    assert r["first_larger"] == (1.0 if g[0] > g[1] else 0.0)
    d = float(alpha[1] - alpha[0])
    assert r["eq5"]["E_a"]["mean"] == pytest.approx(d, abs=1e-6)   # alpha'_a - alpha_a
    assert r["eq5"]["E_b"]["mean"] == pytest.approx(-d, abs=1e-6)
    assert r["eq5"]["P_first"]["mean"] == pytest.approx(0.0, abs=1e-6)
    assert r["eq5"]["P_second"]["std"] == pytest.approx(0.0, abs=1e-6)
    assert r["delta_alpha"]["mean"] == pytest.approx(-d, abs=1e-6)
    e = r["errors_by_gap"]
    assert sum(b["n"] for b in e["bins"]) == len(val)
    if e["auc_small_gap_error"] is not None:  # one gap for every list: a tie, AUC one half
        assert e["auc_small_gap_error"] == pytest.approx(0.5)


def test_errors_sit_where_the_gap_is_small_on_a_trained_model(trained2):
    model, config, data = trained2
    r = swapped_pairs(model, config, data).to_dict()
    e = r["errors_by_gap"]
    assert 0.0 <= e["auc_small_gap_error"] <= 1.0
    assert sum(b["n"] for b in e["bins"]) == data.val_inputs.shape[0]


def test_not_applicable():
    one = Config().override(["task.n_digits=5", "task.list_len=1", "model.d_model=8"])
    with pytest.raises(NotApplicable, match="lists of 1"):
        swapped_pairs(build_model(one), one)
    tiny = Config().override(["task.n_digits=2", "model.d_model=8", "task.train_frac=0.75"])
    with pytest.raises(NotApplicable, match="swapped partner"):
        swapped_pairs(build_model(tiny), tiny)
