"""model_report: a run directory, a seed .pt or a model in, one page out; errors in one line."""

from __future__ import annotations

import json

import pytest

from listcopy.checkpoint import CheckpointError
from listcopy.config import ConfigError
from listcopy.report import build_page, model_report
from listcopy.report.model_page import MODEL_SECTIONS, SECTIONS, SectionRow

from .test_html import external_sources, parse


def figure_data(text: str) -> dict[str, dict]:
    p = parse(text)
    targets = {a["data-target"][4:]: json.loads(t) for a, t in p.scripts
               if a.get("class") == "figure-data"}
    return targets


def test_run_directory_report_has_header_and_training_curve(tiny_run, tmp_path):
    out = tmp_path / "r" / "report.html"
    info = model_report(tiny_run, out, progress=False, umap=False)
    assert info.path == out and out.stat().st_size == info.bytes
    assert info.sections == list(SECTIONS)
    text = out.read_text()
    figs = figure_data(text)
    assert set(figs) == set(info.figures)
    assert {"training_curve", "attention_example", "attention_mean", "mean_attention",
            "pos_ablation", "skip_ablation", "attention_flow", "edges", "sep_attention",
            "pca_2d", "pca_3d", "angles", "probes"} <= set(figs)
    assert "umap_2d" not in figs  # umap=False
    history = json.loads((tiny_run / "run.json").read_text())["history"]
    curve = figs["training_curve"]["data"]
    assert curve[0]["x"] == [h["step"] for h in history]
    assert "Parameters: " in text and "task.n_digits" in text and "train.lr" in text
    for section in SECTIONS:
        assert f'<section id="{section}"' in text
    assert external_sources(text) == []
    assert [p.name for p in out.parent.iterdir()] == ["report.html"]  # no temporary left


def test_precomputed_analysis_and_model_pair(default_model, default_analysis, tmp_path):
    out = tmp_path / "default.html"
    info = model_report(default_model, out, progress=False, analysis=default_analysis)
    assert info.bytes < 10_000_000
    figs = figure_data(out.read_text())
    assert {"umap_2d", "umap_3d"} <= set(figs)  # the default analysis includes UMAP
    heat = figs["attention_mean"]["data"]
    assert heat[0]["z"][2][:2] == pytest.approx(default_analysis["attention"]["mean"][0][0][2][:2],
                                                abs=1e-3)
    assert "training_curve" not in figs  # a seed .pt has no history
    text = out.read_text()  # nor training settings: none shown, rather than listcopy's defaults
    assert "task.n_digits" in text and "train.lr" not in text
    assert "a checkpoint file records no training settings" in text


def test_only_some_analyses(default_model, tmp_path):
    info = model_report(default_model, tmp_path / "o.html", progress=False,
                        only="mean_attention,attention")
    assert info.sections == ["overview", "attention", "mean_attention"]
    assert info.figures == ["attention_example", "attention_mean", "mean_attention"]


def test_bad_input_is_one_line(default_model, tmp_path):
    with pytest.raises(CheckpointError, match="no such run directory"):
        model_report(tmp_path / "missing", tmp_path / "x.html", progress=False)
    with pytest.raises(ConfigError, match="is a directory"):
        model_report(default_model, tmp_path, progress=False)
    with pytest.raises(ConfigError, match="config"):
        model_report(default_model[0], tmp_path / "x.html", progress=False)
    with pytest.raises(ConfigError, match="unknown analysis"):
        model_report(default_model, tmp_path / "x.html", progress=False, only="nope")
    with pytest.raises(ConfigError, match="example"):
        model_report(default_model, tmp_path / "x.html", progress=False, only="attention",
                     example=10**9)
    assert not (tmp_path / "x.html").exists()


def test_smallest_shapes(tmp_path):
    """One digit per list, one layer, three digits: no UMAP (too few points), SEP scores against
    the digit, every other figure drawn."""
    import torch

    from listcopy import Config
    from listcopy.model import build_model

    config = Config().override(["task.n_digits=3", "task.list_len=1", "model.n_layers=1",
                                "model.d_model=4"])
    model = build_model(config, torch.Generator().manual_seed(1)).eval()
    info = model_report(model, tmp_path / "s.html", progress=False, config=config,
                        only="attention,logit_lens,edges,sep_attention,geometry")
    assert info.figures == ["attention_example", "attention_mean", "attention_flow",
                            "logit_lens_accuracy", "edges", "sep_attention", "pca_2d", "pca_3d",
                            "angles"]
    text = (tmp_path / "s.html").read_text()
    assert "no UMAP (it needs at least 4 digits)" in text
    sep = figure_data(text)["sep_attention"]
    assert sep["layout"]["xaxis"]["title"]["text"] == "d1"


def test_a_non_finite_loss_is_shown_as_missing_on_the_page():
    from listcopy import Config

    config = Config()
    base = {"acc": 0.5, "seq_acc": 0.25, "loss": None, "n_val": 4}
    m = {"acc": 0.25, "seq_acc": 0.0, "loss": None}
    page = build_page({"name": config.name, "metrics": base, "mean_attention": m}, config)
    assert [s.id for s in page.sections] == ["overview", "mean_attention"]
    assert page.sections[1].numbers == (
        "Clean: acc 0.5000, seq_acc 0.2500, loss -. "
        "Mean attention: acc 0.2500 (-0.2500), seq_acc 0.0000 (-0.2500), loss -.")
    assert "validation acc 0.5000, seq_acc 0.2500, loss - on 4 lists" in page.subtitle


def test_a_new_section_is_one_builder_and_one_row(odd_analysis):
    """The page is a loop over its table: a row added for a new analysis key draws that
    analysis's section (after the others, its placeholders filled in); rows whose key the result
    lacks draw nothing."""
    _, config, result = odd_analysis

    def toy_scales(value, ctx, s):
        s.what = s.what.format(n=len(value["scales"]))
        s.numbers = f"largest scale {max(value['scales'])}, clean acc {ctx.base['acc']:.4f}"

    table = {**MODEL_SECTIONS, "toy_scales": SectionRow(
        "Toy scales", "Outputs ordered by {n} scales.", toy_scales)}
    page = build_page({**result, "toy_scales": {"scales": [1, 3, 2]}}, config, sections=table)
    assert [s.id for s in page.sections] == [*SECTIONS, "toy_scales"]
    new = page.sections[-1]
    assert (new.title, new.what) == ("Toy scales", "Outputs ordered by 3 scales.")
    assert new.numbers == f"largest scale 3, clean acc {result['metrics']['acc']:.4f}"
    assert table["toy_scales"].what == "Outputs ordered by {n} scales."  # the row is untouched
    few = {k: result[k] for k in ("name", "config", "metrics", "edges")}
    assert [s.id for s in build_page(few, config, sections=table).sections] == ["overview", "edges"]
