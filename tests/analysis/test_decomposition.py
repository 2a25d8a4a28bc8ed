"""Equation 6 and the alpha intervention: on a trained 2-layer model given the paper's layer-0
rule (outputs receive nothing in layer 0), every term, coefficient and accuracy against the
paper's closed form written out here; the identity base + terms = the model's gap elsewhere."""

import pytest
import torch

from listcopy import Config
from listcopy.analysis.decomposition import delta_logits
from listcopy.analysis.intervention import alpha_intervention, default_alpha_edit
from listcopy.analysis.paths import NotApplicable
from listcopy.analysis.pattern_edits import edited_patterns
from listcopy.model import build_model
from listcopy.task import dataset

from .handbuilt import research_rows
from .reference import forward, metrics, no_hooks
from .test_pattern_edits import line_rule


def paper_terms(model, tokens, A0, A1, alpha=None):
    """Equation 6's six vectors (B, D) for lists of 2 and 2 layers, in the paper's order, and
    their coefficients (B,), from the head-summed patterns A0, A1 (B, T, T)."""
    W_E, W_pos = model.W_E.detach().double(), model.W_pos.detach().double()
    a1, a2 = (A0[:, 2, 0], A0[:, 2, 1]) if alpha is None else alpha
    bs, bo = A1[:, 4, 2], A1[:, 4, 3]
    D1, D2 = W_E[tokens[:, 0]] + W_pos[0], W_E[tokens[:, 1]] + W_pos[1]
    S = W_E[tokens[:, 2]] + W_pos[2]
    Em = W_E[tokens[:, 3]]
    coefs = [torch.ones_like(bs), -bs, -bo * a1, -bo * a2, -bo, bo]
    vecs = [W_pos[4].expand_as(D1), W_pos[3].expand_as(D1), D1, D2, S, Em]
    return [c[:, None] * v for c, v in zip(coefs, vecs)], coefs


def research_patterns(model, config, tokens, extra=None):
    rule = line_rule({**research_rows(config), **(extra or {})}, renorm=False)
    seen = []

    def keep(layer, p):
        p = rule(layer, p)
        seen.append(p.double().sum(1))
        return p

    return forward(model, tokens, pattern_edit=keep).double(), seen


def test_equation_6_term_by_term(trained2):
    model, config, data = trained2
    tokens, targets = data.val_inputs, data.val_targets
    logits, (A0, A1) = research_patterns(model, config, tokens)
    vecs, coefs = paper_terms(model, tokens, A0, A1)
    W_U = model.W_U.detach().double()
    t1, t2 = targets[:, 3], targets[:, 4]
    m = t1 != t2
    rows = torch.arange(len(tokens))

    def gap(lo):
        return (lo[rows, t2] - lo[rows, t1])[m]

    with edited_patterns(model, research_rows(config)):
        r = delta_logits(model, config, data).to_dict()
    assert no_hooks(model)
    (pair,) = r["pairs"]
    assert (pair["first"], pair["second"], pair["n"]) == ("o1", "o2", int(m.sum()))
    assert [t["label"] for t in pair["terms"]] == ["P(o2)", "P(o1)", "D1", "D2", "S", "E(out)"]
    for term, v, c in zip(pair["terms"], vecs, coefs):
        assert term["individual"] == pytest.approx(float(gap(v @ W_U).mean()), abs=1e-5)
        assert term["coefficient"] == pytest.approx(float(c[m].mean()), abs=1e-6)
    assert pair["base"] == pytest.approx(float(gap(logits[:, 3]).mean()), abs=1e-4)
    assert pair["model_gap"] == pytest.approx(float(gap(logits[:, 4]).mean()), abs=1e-4)
    assert pair["final"] == pytest.approx(pair["model_gap"], abs=1e-3)
    assert pair["acc_rebuilt"] == pair["acc_model"] == pytest.approx(
        float((logits[:, 4].argmax(-1) == t2).double().mean()))


def test_alpha_intervention_in_the_model_and_in_delta_l(trained2):
    model, config, data = trained2
    tokens, targets = data.val_inputs, data.val_targets
    edits = default_alpha_edit(config)
    assert edits == {(0, 2, 0): 0.0, (0, 2, 1): 1.0}
    r = alpha_intervention(model, config, data).to_dict()  # the plain model
    after = forward(model, tokens, pattern_edit=line_rule(edits, renorm=False))
    right = after[:, 3:].argmax(-1) == targets[:, 3:]
    assert r["after"]["per_position_acc"] == pytest.approx(right.double().mean(0).tolist())
    assert r["before"]["acc"] == pytest.approx(metrics(forward(model, tokens), targets, 2)["acc"])

    with edited_patterns(model, research_rows(config)):
        f = alpha_intervention(model, config, data).to_dict()["delta_logits"]
    logits, (A0, A1) = research_patterns(model, config, tokens)
    one = torch.ones(len(tokens), dtype=torch.float64)
    vecs, _ = paper_terms(model, tokens, A0, A1, alpha=(0 * one, one))
    rebuilt = logits[:, 3] + sum(vecs) @ model.W_U.detach().double()
    assert f["position"] == "o2"
    assert f["acc_after"] == pytest.approx(float((rebuilt.argmax(-1) == targets[:, 4]).double().mean()))
    assert f["acc_before"] == f["acc_model"] == pytest.approx(
        float((logits[:, 4].argmax(-1) == targets[:, 4]).double().mean()))
    assert f["acc_after"] != f["acc_before"]


def test_longer_lists_and_more_layers_add_up():
    config = Config().override(["task.n_digits=6", "task.list_len=3", "model.n_layers=3",
                                "model.d_model=8"])
    model = build_model(config, torch.Generator().manual_seed(2)).eval()
    data = dataset(config)
    r = delta_logits(model, config, data).to_dict()
    assert [(p["first"], p["second"]) for p in r["pairs"]] == [("o1", "o2"), ("o2", "o3")]
    assert [t["label"] for t in r["pairs"][1]["terms"]] == ["P(o3)", "P(o2)", "P(o1)", "D1", "D2",
                                                            "D3", "S", "E(out)"]
    for p in r["pairs"]:
        assert p["final"] == pytest.approx(p["model_gap"], abs=1e-4)
        assert p["acc_rebuilt"] == pytest.approx(p["acc_model"])
        assert p["terms"][0]["coefficient"] == pytest.approx(1.0)  # the later output's own P


def test_refusals(odd):
    model, config, data = odd
    with pytest.raises(NotApplicable, match="LayerNorm"):
        delta_logits(model, config, data)
    f = alpha_intervention(model, config, data).to_dict()
    assert "LayerNorm" in f["delta_logits"] and len(f["after"]["per_position_acc"]) == 3
    one = Config().override(["task.n_digits=5", "task.list_len=1", "model.d_model=8"])
    with pytest.raises(NotApplicable, match="lists of 1"):
        delta_logits(build_model(one), one)
