"""Each figure shows the analysis's numbers, in the field's conventions; checked by hand."""

from __future__ import annotations

import numpy as np
import pytest

from listcopy.report import figures as F
from listcopy.task import token_labels


def test_attention_heatmaps_follow_the_seed_notebook(odd_analysis):
    _, config, result = odd_analysis
    a = result["attention"]
    labels = token_labels(3)
    fig = F.attention_heatmaps(a["mean"], labels, "Average", "Average Attention")
    heat = [t for t in fig.data if t.type == "heatmap"]
    assert len(heat) == config.model.n_layers * config.model.n_heads  # a panel per layer and head
    for i, t in enumerate(heat):
        h, l = divmod(i, config.model.n_layers)
        assert list(t.x) == labels and list(t.y) == labels
        assert (t.zmin, t.zmax) == (0, 1)
        np.testing.assert_allclose(np.array(t.z, dtype=float), np.array(a["mean"][l][h]), atol=1e-3)
    assert all(ax.autorange == "reversed" for ax in _axes(fig, "yaxis"))  # query rows top down
    assert all(ax.title.text == "Key Position" for ax in _axes(fig, "xaxis"))


def _axes(fig, kind):
    return [getattr(fig.layout, k) for k in fig.layout.to_plotly_json() if k.startswith(kind)]


def test_ablation_bars_stand_against_the_clean_model():
    base = {"acc": 0.9, "seq_acc": 0.8, "loss": 0.3}
    pos = {"blocks.0.hook_resid_pre": {"acc": 0.5, "seq_acc": 0.25, "loss": 1.0},
           "blocks.1.hook_resid_post": {"acc": 0.875, "seq_acc": 0.75, "loss": 0.4}}
    fig = F.pos_ablation_bars(pos, base)
    acc, seq = fig.data
    assert list(acc.x) == ["clean", "embed", "L1"]
    assert list(acc.y) == [0.9, 0.5, 0.875] and list(seq.y) == [0.8, 0.25, 0.75]
    lines = sorted(s.y0 for s in fig.layout.shapes if s.type == "line")
    assert lines == [0.8, 0.9]  # the clean numbers, dashed across the chart
    assert "(-0.4000)" in acc.hovertext[1]

    skip = {kind: {"0": pos["blocks.0.hook_resid_pre"], "all": pos["blocks.1.hook_resid_post"]}
            for kind in ("zero", "mean")}
    fig = F.skip_ablation_bars(skip, base)
    assert [list(t.x) for t in fig.data] == [["clean", "layer 0", "all layers"]] * 4
    assert sum(t.showlegend is not False for t in fig.data) == 2


def test_edge_table_is_sorted_by_effect():
    base = {"acc": 0.9, "seq_acc": 0.8, "loss": 0.3}
    rows = []
    for (layer, q, k, dacc, dloss) in [(0, 2, 0, -0.0005, 0.01), (0, 2, 1, -0.5, 1.0),
                                       (1, 3, 2, -0.1, 0.2), (1, 4, 3, 0.02, -0.1),
                                       (2, 3, 2, -0.1, 0.5)]:
        rows.append({"layer": layer, "query": q, "key": k, "label": f"q{q}<-k{k}",
                     "acc": base["acc"] + dacc, "seq_acc": 0.5, "loss": 0.3 + dloss,
                     "delta_acc": dacc, "delta_loss": dloss})
    edges = {"tolerance": 0.001, "base": base, "edges": rows, "removable": [[0, 2, 0]],
             "combined": base}
    table = F.edge_table(edges)
    # largest drop first; equal drops: the larger loss increase first
    assert [(r["layer"], r["delta_acc"]) for r in table.rows] == [
        (0, -0.5), (2, -0.1), (1, -0.1), (0, -0.0005), (1, 0.02)]
    assert [r["removable"] for r in table.rows] == [False, False, False, True, False]
    assert list(table.bad) == [True, True, True, False, True]
    fig = F.edge_bars(edges)
    assert list(fig.data[0].y) == [f"L{r['layer']} {r['edge']}" for r in table.rows]
    fig = F.edge_bars(edges, limit=2)  # only the largest effects, still sorted
    assert list(fig.data[0].x) == [-0.5, -0.1]


def test_attention_flow_draws_every_weight_and_labels_nodes_with_the_lens(odd_analysis):
    _, config, result = odd_analysis
    lens = result["logit_lens"]
    fig = F.attention_flow(lens, config.task.n_digits, min_weight=0.02)
    T, n_layers, H = 7, config.model.n_layers, config.model.n_heads
    attn = np.array(lens["attention"])
    edges = int((attn >= 0.02).sum())
    residual = n_layers * T
    assert len(fig.layout.shapes) == residual + edges
    nodes = fig.data[-1]
    assert len(nodes.x) == (n_layers + 1) * T
    assert list(nodes.text) == [F.token_text(t, config.task.n_digits)
                                for stage in lens["top_token"] for t in stage]
    assert (nodes.marker.cmin, nodes.marker.cmax) == (0, 1)
    widths = sorted(s.line.width for s in fig.layout.shapes if s.line.dash != "dot")
    assert widths == sorted(round(0.5 + 7 * w, 2) for w in attn[attn >= 0.02])
    assert H == 2 and len({s.line.color for s in fig.layout.shapes if s.line.dash != "dot"}) == 2


def test_sep_scatter_colours_by_correctness_and_stays_bounded():
    n = 50
    rng = np.random.default_rng(0)
    correct = (np.arange(n) % 3 == 0).tolist()
    sep = {"layer": 0, "keys": ["d1", "d2"], "digits": rng.integers(0, 10, (n, 2)).tolist(),
           "scores": rng.normal(size=(n, 1, 2)).round(4).tolist(),
           "pattern": [[[0.5, 0.5]]] * n, "token_correct": [[c, c] for c in correct],
           "correct": correct}
    fig = F.sep_scatter(sep)
    right, wrong = fig.data
    assert len(right.x) == sum(correct) and len(wrong.x) == n - sum(correct)
    assert right.marker.color == F.RIGHT_COLOR and wrong.marker.color == F.WRONG_COLOR
    first = [i for i in range(n) if correct[i]][0]
    assert (right.x[0], right.y[0]) == pytest.approx(tuple(sep["scores"][first][0]), rel=1e-3)
    fig = F.sep_scatter(sep, max_points=20)
    assert sum(len(t.x) for t in fig.data) == 20


def test_geometry_and_probe_figures(odd_analysis):
    _, config, result = odd_analysis
    g = result["geometry"]
    assert g["umap"] is None
    fig = F.pca_2d(g, token_labels(3))
    assert len(fig.data) == 3  # W_E, W_U, W_pos
    assert list(fig.data[0].text) == [str(d) for d in range(config.task.n_digits)]
    assert list(fig.data[2].text) == token_labels(3)
    assert fig.data[0].x[1] == pytest.approx(g["pca"]["W_E"]["coords"][1][0], rel=1e-3)
    assert all(t.type == "scatter3d" for t in F.pca_3d(g).data)
    angles = F.angle_heatmaps(g, limit=4).data[0]
    assert len(angles.z) == 4 and (angles.zmin, angles.zmax) == (0, 180)

    umap = {"W_E": {"2d": [[0, 1]] * 6, "3d": [[0, 1, 2]] * 6}, "W_U": {"2d": None, "3d": None}}
    assert len(F.umap_2d({**g, "umap": umap}).data) == 1
    assert F.umap_3d({**g, "umap": umap}).data[0].type == "scatter3d"

    p = result["probes"]
    fig = F.probe_lines(p, config.task.n_digits)
    stages = ["embed", "L0", "L1"]
    assert all(list(t.x) == stages for t in fig.data)
    d2_lda_auc = [t for t in fig.data if t.name == "d2 lda" and t.xaxis == "x2"][0]
    assert list(d2_lda_auc.y) == [pytest.approx(p["rows"][3 * 0 + 1]["lda"]["auc"], abs=1e-4),
                                  pytest.approx(p["rows"][3 * 1 + 1]["lda"]["auc"], abs=1e-4),
                                  pytest.approx(p["rows"][3 * 2 + 1]["lda"]["auc"], abs=1e-4)]


def test_training_curve():
    history = [{"step": 10 * i, "train_loss": 3.0 / i, "val_loss": 3.2 / i, "acc": i / 10,
                "seq_acc": i / 20} for i in range(1, 6)]
    fig = F.training_curve(history, 0.999)
    assert [t.name for t in fig.data] == ["train loss", "val loss", "acc", "seq_acc"]
    assert list(fig.data[2].x) == [10, 20, 30, 40, 50] and list(fig.data[3].y) == [
        0.05, 0.1, 0.15, 0.2, 0.25]
    assert fig.layout.yaxis.type == "log"


def test_a_non_finite_loss_is_shown_as_missing():
    base = {"acc": 0.5, "seq_acc": 0.25, "loss": None}
    m = {"acc": 0.25, "seq_acc": 0.0, "loss": None}
    fig = F.metric_bars("t", [("x", m)], base)
    assert "loss -" in fig.data[0].hovertext[1]
    row = {"layer": 0, "query": 2, "key": 0, "label": "SEP<-d1", "acc": 0.25, "seq_acc": 0.0,
           "loss": None, "delta_acc": -0.25, "delta_loss": None}
    edges = {"tolerance": 0.001, "base": base, "edges": [row], "removable": [], "combined": base}
    assert F.edge_table(edges).rows[0]["delta_loss"] is None
    assert "loss - (-)" in F.edge_bars(edges).data[0].hovertext[0]
