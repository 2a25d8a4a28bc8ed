"""The "Order by scale" and "Critical edges" sections: drawn from the analysis JSON, every number
on a figure the JSON's, a part that does not apply shown by its reason."""

from __future__ import annotations

import pytest
import torch

from listcopy import Config
from listcopy.report import build_page

from .conftest import TINY


@pytest.fixture(scope="module")
def paper_analysis():
    """A tiny 2-layer model trained part way: right and wrong lists, every part applies."""
    from listcopy.analysis import analyze
    from listcopy.training import train

    config = Config().override([*TINY, "task.n_digits=30", "model.n_layers=2", "model.d_model=16",
                                "train.max_steps=600"])
    model = train(config, progress=False).model().eval()
    return config, analyze(model, config, only="order_by_scale,critical_edges")


def test_sections_and_figures(paper_analysis):
    config, result = paper_analysis
    page = build_page(result, config)
    assert [s.id for s in page.sections] == ["overview", "order_by_scale", "critical_edges"]
    obs, crit = page.sections[1], page.sections[2]
    assert [f.id for f in obs.figures] == [
        "obs_attention_histograms", "obs_alpha_scatter", "obs_error_scatter",
        "obs_delta_logits_o1_o2", "obs_intervention", "obs_swapped_pairs", "obs_positional_svc"]
    assert [f.id for f in crit.figures] == ["critical_circuit"]
    assert "Logits rebuilt from the attention paths" in obs.numbers
    assert "critical of" in crit.numbers
    page.render()


def test_figure_numbers_are_the_json(paper_analysis):
    from listcopy.report import paper_figures as P

    config, result = paper_analysis
    obs, crit = result["order_by_scale"], result["critical_edges"]
    pair = obs["delta_logits"]["pairs"][0]
    bars = P.delta_logit_bars(pair).data[0]
    assert list(bars.x) == pytest.approx([pair["base"]] + [t["individual"] for t in pair["terms"]],
                                         rel=1e-3, abs=1e-6)
    hist = P.attention_histograms(obs["attention"])
    n_right = sum(obs["attention"]["correct"])
    assert [len(t.x) for t in hist.data[:2]] == [n_right, len(obs["attention"]["correct"]) - n_right]
    assert len(hist.data) == 2 * 4  # right and wrong, for SEP->d1, SEP->d2, o2->SEP, o2->o1
    graph = P.circuit_graph(crit, config.task.n_digits)
    labels = list(graph.data[0].text)
    assert labels == [f"{100 * d:+.1f}%" for *_, d in crit["critical"]]
    wrong = P.error_scatter(obs["attention"]).data[0]
    assert len(wrong.x) == len(obs["attention"]["correct"]) - n_right


def test_parts_that_do_not_apply_are_said():
    from listcopy.analysis import analyze
    from listcopy.model import build_model

    config = Config().override(["task.n_digits=5", "model.d_model=8", "model.ln=true",
                                "model.n_layers=2"])
    model = build_model(config, torch.Generator().manual_seed(0)).eval()
    page = build_page(analyze(model, config, only="order_by_scale"), config)
    obs = page.sections[1]
    assert "Path reconstruction: does not apply (the model has LayerNorm" in obs.numbers
    assert "Delta-logit decomposition: does not apply" in obs.numbers
    assert "obs_delta_logits_o1_o2" not in [f.id for f in obs.figures]
    page.render()
