"""The paper's analyses against the numbers the research line's own notebook code computed
(tests/fixtures/research/interp.json, made by make_interp.py there) on its models.

Until listcopy loads the line's variant itself (issue 14), the line's model is put into a
listcopy model by hand: its vocabulary is 102 = n_digits + 2 (MASK 100, SEP 101), so a listcopy
config of 101 "digits" has the same shapes and SEP id; its inputs (MASK at the outputs) are the
fixture's own validation lists; and its layer-0 rule (outputs receive nothing in layer 0) is the
pattern edit ``research_rows`` around every call. Layer 0's output rows are then masked in
listcopy's search but allowed-then-zeroed in the line's, so the line searches two more edges
((0, 3, 3), (0, 4, 4)): both change nothing.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from listcopy import Config
from listcopy.analysis import (ablate_edges, alpha_intervention, critical_edges, delta_logits,
                               logit_reconstruction, mean_attention_ablation, positional_svc,
                               swapped_pairs)
from listcopy.analysis.common import val_metrics
from listcopy.analysis.pattern_edits import edited_patterns
from listcopy.model import ListCopyTransformer
from listcopy.task import Dataset

from .handbuilt import research_rows

RESEARCH = Path(__file__).parent.parent / "fixtures" / "research"
SHARED = Path(__file__).parent.parent.parent.parent / "shared" / "research" / "checkpoints"
MODELS = {"2layer_100dig_64d_step1000": RESEARCH / "2layer_100dig_64d_step1000.pt",
          "3layer_100dig_64d": SHARED / "3layer_100dig_64d.pt"}

pytestmark = [pytest.mark.slow, pytest.mark.skipif(
    not (RESEARCH / "interp.json").exists(),
    reason="tests/fixtures/research (the fixtures branch) not merged into this branch yet")]

NOTEBOOK_EDGES = [(0, 4, 3), (0, 0, 0), (0, 1, 0), (1, 0, 0), (1, 1, 0), (1, 2, 0), (1, 2, 1),
                  (1, 4, 3)]  # the notebook's "ablation of specific attn edges"


@pytest.fixture(scope="module", params=list(MODELS))
def line(request):
    """(name, fixture numbers, model, config, data) of one of the line's models."""
    if not MODELS[request.param].exists():
        pytest.skip(f"{MODELS[request.param]} missing")
    return _line(request.param)


def _line(name: str):
    from safetensors.torch import load_file

    path = MODELS[name]
    fx = json.loads((RESEARCH / "interp.json").read_text())["models"][name]
    n_layers = int(name[0])
    config = Config().override(["task.n_digits=101", f"model.n_layers={n_layers}",
                                "model.d_model=64"])
    model = ListCopyTransformer(config)
    model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    val = load_file(str(RESEARCH / f"interp_{name}.safetensors"))["val_inputs"].long()
    targets = val.clone()
    targets[:, 3:] = val[:, :2]
    pad = config.task.n_train  # rows before the validation part (never read here)
    data = Dataset(config.task, torch.cat([val[:1].expand(pad, -1), val]),
                   torch.cat([targets[:1].expand(pad, -1), targets]))
    return name, fx, model.eval(), config, data


def test_metrics_and_mean_attention(line):
    name, fx, model, config, data = line
    nb = fx["notebook"]["renorm_True"]
    with edited_patterns(model, research_rows(config)):
        m = val_metrics(model, data)
        ma = mean_attention_ablation(model, config, data)
    assert m.acc == pytest.approx(nb["original_accuracy"], abs=1e-6)
    assert m.loss == pytest.approx(nb["original_loss"], abs=1e-5)
    assert ma.ablated.acc == pytest.approx(nb["accuracy_with_mean_attention"], abs=1e-6)
    if "baseline" in fx["computed_here"]:
        b = fx["computed_here"]["baseline"]
        assert m.seq_acc == pytest.approx(b["seq_acc"], abs=1e-6)
        assert list(m.per_position_acc) == pytest.approx(b["per_position_acc"], abs=1e-6)


@pytest.mark.parametrize("renorm", [True, False])
def test_critical_edges_and_the_notebook_ablation(line, renorm):
    name, fx, model, config, data = line
    nb = fx["notebook"][f"renorm_{renorm}"]
    with edited_patterns(model, research_rows(config)):
        c = critical_edges(model, config, data, tolerance=0.01, renorm=renorm).to_dict()
        e = ablate_edges(model, config, NOTEBOOK_EDGES, renorm=renorm, data=data).to_dict()
    want = nb["critical_edges"]
    assert [r[:3] for r in c["critical"]] == want["critical"]
    assert c["acc_without_non_critical"] == pytest.approx(want["acc_without_non_critical"], abs=1e-6)
    mine = {tuple(r[:3]): r[3] for r in c["critical"] + c["non_critical"]}
    for layer, q, k, _, delta in want["individual_layer_query_key_acc_delta"]:
        assert mine.get((layer, q, k), 0.0) == pytest.approx(delta, abs=1e-6)
    assert e["acc"] == pytest.approx(nb["edge_ablation"]["acc"], abs=1e-6)
    here = fx["computed_here"].get(f"edge_ablation_renorm_{renorm}")
    if here is not None:
        for pos, errs in here["errors"].items():
            for key, value in errs.items():
                assert e["errors"][pos][key] == pytest.approx(value, abs=1e-6), (pos, key)


def test_reconstruction_at_any_depth(line):
    """Exact at any depth (the path sum is over every layer); the notebook's own reconstruction is
    the 2-layer formula, so its numbers are the reference for the 2-layer model only."""
    name, fx, model, config, data = line
    with edited_patterns(model, research_rows(config)):
        rec = logit_reconstruction(model, config, data).to_dict()
        base = val_metrics(model, data)
    assert max(rec["mean_l2"]) < 1e-4 and rec["acc"] == pytest.approx(base.acc, abs=1e-6)
    if config.model.n_layers == 2:
        assert rec["acc"] == pytest.approx(fx["notebook"]["renorm_True"]["reconstruction"]["acc"])
    else:  # the 2-layer formula misses the third layer's paths: far from the logits
        assert fx["notebook"]["renorm_True"]["reconstruction"]["mean_l2_o2_digits"] > 1.0


def test_delta_logits_of_the_two_layer_model():
    name = "2layer_100dig_64d_step1000"
    if not MODELS[name].exists():
        pytest.fail(f"{MODELS[name]} missing (a committed fixture)")
    name, fx, model, config, data = _line(name)
    dl = fx["notebook"]["renorm_True"]["delta_logits"]
    with edited_patterns(model, research_rows(config)):
        pair = delta_logits(model, config, data).to_dict()["pairs"][0]
    assert pair["n"] == dl["n_examples"] and pair["base"] == pytest.approx(dl["base_o1_d2_minus_d1"])
    assert [t["individual"] for t in pair["terms"]] == pytest.approx(dl["contributions"], abs=1e-6)
    assert pair["final"] == pytest.approx(dl["final"], abs=1e-6)


def test_alpha_swapped_pairs_and_separability(line):
    name, fx, model, config, data = line
    nb, here = fx["notebook"]["renorm_True"], fx["computed_here"]
    with edited_patterns(model, research_rows(config)):
        ai = alpha_intervention(model, config, data).to_dict()
        sp = swapped_pairs(model, config, data).to_dict()
        svc = positional_svc(model, config, data, layer=1).to_dict()  # the notebook reads layer 1
    assert ai["after"]["per_position_acc"] == pytest.approx(
        here["alpha_intervention"]["after"]["per_position_acc"], abs=1e-6)
    s = here["swapped_pairs"]
    assert sp["n_pairs"] == s["n_pairs"]
    assert sp["position_order_kept"] == pytest.approx(1.0 - s["reverse_rate"])
    assert sp["errors_by_gap"]["mean_gap_right"] == pytest.approx(s["mean_abs_gap_correct"], abs=1e-6)
    assert sp["errors_by_gap"]["mean_gap_wrong"] == pytest.approx(s["mean_abs_gap_incorrect"], abs=1e-6)
    if config.model.n_layers == 2:  # the notebook's SVC cell is written for the 2-layer model
        assert svc["inner_products"]["separable"] == nb["positional_svc"]["separable"]
    else:
        assert svc["inner_products"]["accuracy"] > 0.99  # the notebook's: 0.9965
