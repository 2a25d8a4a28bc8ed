"""The order_by_scale and critical_edges keys of analyze: every part present, strings where the
maths does not apply, the per-list attention of Figures 3 and 4 against the cached patterns."""

import json

import torch

from listcopy import Config
from listcopy.analysis import analyze, format_summary
from listcopy.analysis.order_scale import PARTS, paper_attention
from listcopy.model import build_model
from listcopy.task import dataset

from .reference import forward


def test_every_part_on_a_trained_model(trained2):
    model, config, data = trained2
    r = json.loads(json.dumps(analyze(model, config, only="order_by_scale,critical_edges",
                                      data=data), allow_nan=False))
    assert r["per_position_acc"] == r["metrics"]["per_position_acc"]
    obs = r["order_by_scale"]
    assert set(obs) == set(PARTS) and all(isinstance(v, dict) for v in obs.values())
    assert set(obs["positional_svc"]) >= {"accuracy", "margin"}
    assert set(obs["reconstruction"]) >= {"mean_l2", "acc"}
    assert set(r["critical_edges"]) >= {"critical", "non_critical", "acc_without_non_critical"}
    assert all(len(e) == 4 for e in r["critical_edges"]["critical"])
    text = format_summary(r)
    assert "order by scale:" in text and "critical edges" in text and "paths: mean L2" in text


def test_strings_where_the_maths_does_not_hold(odd):
    model, config, data = odd  # LayerNorm, biases, 2 heads, lists of 3
    obs = analyze(model, config, only="order_by_scale", data=data)["order_by_scale"]
    assert "LayerNorm" in obs["reconstruction"] and "LayerNorm" in obs["delta_logits"]
    assert isinstance(obs["alpha_intervention"], dict)
    assert "LayerNorm" in obs["alpha_intervention"]["delta_logits"]
    assert isinstance(obs["swapped_pairs"], dict) and isinstance(obs["positional_svc"], dict)
    one = Config().override(["task.n_digits=6", "task.list_len=1", "model.d_model=8"])
    r = analyze(build_model(one, torch.Generator().manual_seed(0)), one,
                only="order_by_scale,critical_edges")
    for part in ("delta_logits", "swapped_pairs", "positional_svc"):
        assert r["order_by_scale"][part].startswith("lists of 1")
    assert isinstance(r["order_by_scale"]["reconstruction"], dict)
    assert "does not apply: lists of 1" in format_summary(r)


def test_paper_attention_is_the_cached_patterns(trained2):
    model, config, data = trained2
    seen = []
    forward(model, data.val_inputs, pattern_edit=lambda layer, p: seen.append(p) or p)
    a = paper_attention(model, config, data)
    assert torch.allclose(a.alpha, seen[0][:, 0, 2, :2], atol=1e-6)   # SEP -> d1, d2 at layer 0
    assert torch.allclose(a.beta, seen[1][:, 0, 4, 2:4], atol=1e-6)   # o2 -> SEP, o1 at layer 1
    assert a.alpha_keys == ("d1", "d2") and a.beta_keys == ("SEP", "o1")
    logits = forward(model, data.val_inputs)
    assert torch.equal(a.token_correct, logits[:, 3:].argmax(-1) == data.val_targets[:, 3:])
    assert torch.equal(a.digits, dataset(config).val_inputs[:, :2])
