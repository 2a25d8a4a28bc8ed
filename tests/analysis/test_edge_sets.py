"""Any edge set ablated at once, with the error taxonomy: hand-written cases, and a trained model
against the hand-written forward with the line's rule."""

import pytest
import torch

from listcopy.analysis.edge_sets import ablate_edges, error_taxonomy
from listcopy.analysis.pattern_edits import parse_edges
from listcopy.config import ConfigError

from .reference import forward, metrics, no_hooks
from .test_pattern_edits import line_rule


def test_error_taxonomy_by_hand():
    digits = torch.tensor([[1, 2], [3, 4], [5, 6], [7, 8]])
    targets = digits.clone()
    preds = torch.tensor([[1, 1],    # o2 wrong: equals o1's prediction and d1
                          [3, 4],    # right
                          [6, 6],    # o1 wrong (= d2); o2 right
                          [7, 9]])   # o2 wrong: equals nothing named
    e = error_taxonomy(preds, targets, digits)
    assert e["o1"] == {"wrong": 0.25, "n_wrong": 1, "eq_prev_pred": None, "eq_d1": 0.0, "eq_d2": 1.0}
    assert e["o2"] == {"wrong": 0.5, "n_wrong": 2, "eq_prev_pred": 0.5, "eq_d1": 0.5, "eq_d2": 0.0}
    none_wrong = error_taxonomy(targets, targets, digits)["o2"]
    assert none_wrong == {"wrong": 0.0, "n_wrong": 0, "eq_prev_pred": None, "eq_d1": None,
                          "eq_d2": None}


@pytest.mark.parametrize("renorm", [True, False])
def test_ablation_equals_the_hand_written_forward(trained, renorm):
    model, config, data = trained
    edges = parse_edges("0:4-3,0-0,1-0,2-1;1:2-1,4-3,4-2", 3, 5)
    r = ablate_edges(model, config, edges, renorm=renorm, data=data)
    logits = forward(model, data.val_inputs, pattern_edit=line_rule({e: 0.0 for e in edges}, renorm))
    want = metrics(logits, data.val_targets, 2)
    d = r.to_dict()
    assert d["acc"] == pytest.approx(want["acc"]) and d["seq_acc"] == pytest.approx(want["seq_acc"])
    preds = logits[:, 3:].argmax(-1)
    right = preds == data.val_targets[:, 3:]
    assert d["per_position_acc"] == pytest.approx(right.float().mean(0).tolist())
    o2_wrong = ~right[:, 1]
    n = int(o2_wrong.sum())
    assert d["errors"]["o2"]["n_wrong"] == n > 0
    assert d["errors"]["o2"]["eq_prev_pred"] == pytest.approx(
        float((preds[o2_wrong, 1] == preds[o2_wrong, 0]).float().mean()))
    assert d["errors"]["o2"]["eq_d1"] == pytest.approx(
        float((preds[o2_wrong, 1] == data.val_inputs[o2_wrong, 0]).float().mean()))
    assert d["edges"] == "0:4-3,0-0,1-0,2-1;1:2-1,4-3,4-2" and d["renorm"] is renorm
    assert d["base"]["acc"] >= 0.999 and d["delta_acc"] == pytest.approx(d["acc"] - d["base"]["acc"])
    assert no_hooks(model)


def test_the_json_shape_of_the_issue(trained2):
    model, config, data = trained2
    d = ablate_edges(model, config, [(1, 4, 3)], data=data).to_dict()
    assert {"acc", "seq_acc", "per_position_acc", "errors"} <= set(d)
    assert set(d["errors"]) == {"o1", "o2"}
    assert set(d["errors"]["o2"]) == {"wrong", "n_wrong", "eq_prev_pred", "eq_d1", "eq_d2"}


def test_edges_outside_the_model_are_refused(trained2):
    model, config, data = trained2
    with pytest.raises(ConfigError, match="outside the model's 2 layers x 5 positions"):
        ablate_edges(model, config, [(2, 4, 3)], data=data)
