"""Plotly figures of the paper "Order by Scale", each from the JSON of ``listcopy analyze``:

    circuit_graph        Figure 1: the critical edges of one example, labelled with their cost
    delta_logit_bars     Figure 2: each term's contribution to the gap, cumulative line, final
    attention_histograms Figure 3: SEP's and the last output's weights, right and wrong lists
    alpha_scatter        Figure 4: alpha_{s->d1} against alpha_{s->d2}, right and wrong lists
    error_scatter        the wrong lists over (d1, d2)
    intervention_bars    per-position accuracy before and after the weights are set
    swapped_histograms   equation 5's coefficients over swapped pairs; error rate by alpha gap
    svc_points           the output residuals projected on W_pos: PCA (and UMAP) by position
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from .figures import (ACC_COLOR, CLEAN_COLOR, HEAD_COLORS, MAX_SCATTER_POINTS, RIGHT_COLOR,
                      SEQ_COLOR, WRONG_COLOR, _go, _layout, _lens_nodes, _round, _subplots)

HIST_BINS = 30


def _subsample(n: int, limit: int = MAX_SCATTER_POINTS, seed: int = 0) -> np.ndarray:
    if n <= limit:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, limit, replace=False))


# ---- Figure 1 ------------------------------------------------------------------------------------

def circuit_graph(critical: dict[str, Any], n_digits: int):
    """The minimal circuit: for the example list, a node per (stage, position) with the logit
    lens's top token, and a line per critical edge, as thick as the example's weight, labelled
    with the accuracy change its ablation alone causes."""
    go = _go()
    ex = critical["example"]
    labels = critical["labels"]
    lens = {**ex, "labels": labels}
    shapes, xs, ys, texts = [], [], [], []
    for s in range(len(ex["attention"])):
        for t in range(len(labels)):
            shapes.append(dict(type="line", x0=s, y0=t, x1=s + 1, y1=t, layer="below",
                               line=dict(color="#cccccc", width=1, dash="dot")))
    for layer, q, k, delta in critical["critical"]:
        w = sum(h[q][k] or 0.0 for h in ex["attention"][layer])
        shapes.append(dict(type="line", x0=layer, y0=k, x1=layer + 1, y1=q, layer="below",
                           opacity=0.35 + 0.5 * min(w, 1.0),
                           line=dict(color=WRONG_COLOR, width=round(0.6 + 5 * min(w, 1.0) ** 0.5, 2))))
        xs.append(layer + 0.5)
        ys.append((q + k) / 2)
        texts.append(f"{100 * delta:+.1f}%")
    fig = go.Figure()
    fig.add_trace(go.Scatter(x=xs, y=ys, mode="text", text=texts, textfont=dict(size=11),
                             hoverinfo="skip", showlegend=False))
    fig.add_trace(_lens_nodes(lens, n_digits, go))
    stages = ex["stage_labels"]
    fig.update_layout(shapes=shapes)
    fig.update_xaxes(tickvals=list(range(len(stages))), ticktext=list(stages), title_text="stage",
                     range=[-0.4, len(stages) - 0.6], showgrid=False, zeroline=False)
    fig.update_yaxes(tickvals=list(range(len(labels))), ticktext=list(labels),
                     autorange="reversed", showgrid=False, zeroline=False)
    _layout(fig, f"Minimal circuit: {len(critical['critical'])} critical edges (label: accuracy "
            f"change when ablated alone), validation example {ex['example_index']}",
            120 + 70 * len(labels))
    return fig


# ---- Figure 2 ------------------------------------------------------------------------------------

def delta_logit_bars(pair: dict[str, Any]):
    """Horizontal bars: the base gap, then each term's mean contribution (positive favours the
    second position's target); dashed: the running total; purple: the final gap."""
    go = _go()
    names = [f"l_{pair['first']} (base)"] + [f"{t['label']} (coef {t['coefficient']:+.3f})"
                                             for t in pair["terms"]]
    values = [pair["base"]] + [t["individual"] for t in pair["terms"]]
    cum = [pair["base"]] + [t["cumulative"] for t in pair["terms"]]
    colors = [CLEAN_COLOR] + [ACC_COLOR if v > 0 else WRONG_COLOR for v in values[1:]]
    fig = go.Figure(go.Bar(y=names, x=_round(values), orientation="h", marker_color=colors,
                           text=[f"{v:+.2f}" for v in values], textposition="outside",
                           name="contribution", hovertemplate="%{y}: %{x:.3f}<extra></extra>"))
    fig.add_trace(go.Scatter(x=_round(cum), y=names, mode="lines+markers", name="cumulative",
                             line=dict(color="dimgray", dash="dash", shape="vh")))
    fig.add_vline(x=pair["final"], line_dash="dash", line_color="purple",
                  annotation_text=f"final {pair['final']:.2f} (model {pair['model_gap']:.2f})")
    fig.update_yaxes(autorange="reversed", type="category")
    fig.update_xaxes(title_text=f"contribution to the {pair['second']} gap (negative favours "
                                f"{pair['first']}'s target, positive {pair['second']}'s)")
    _layout(fig, f"Delta-logit decomposition {pair['first']} -> {pair['second']} over "
            f"{pair['n']} lists", 160 + 40 * len(names), margin=dict(l=220, r=40, t=80, b=60))
    return fig


# ---- Figures 3 and 4, the error scatter ---------------------------------------------------------

def _by_correctness(att: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    correct = np.asarray(att["correct"], dtype=bool)
    return correct, np.asarray(att["alpha"], dtype=np.float64)


def attention_histograms(att: dict[str, Any]):
    """Top row: SEP's layer-0 weight on each digit; bottom row: the last output's layer-1
    weight on SEP and the earlier outputs; right (green) and wrong (red) lists overlaid."""
    go = _go()
    correct, alpha = _by_correctness(att)
    panels = [(f"SEP \u2192 {k} (layer 0)", alpha[:, i]) for i, k in enumerate(att["alpha_keys"])]
    beta = att.get("beta")
    last = f"o{len(att['alpha_keys'])}"
    if beta is not None:
        b = np.asarray(beta, dtype=np.float64)
        panels += [(f"{last} \u2192 {k} (layer 1)", b[:, i]) for i, k in enumerate(att["beta_keys"])]
    cols = len(att["alpha_keys"])
    rows = (len(panels) + cols - 1) // cols
    fig = _subplots(rows=rows, cols=cols, subplot_titles=[p[0] for p in panels])
    for n, (_, v) in enumerate(panels):
        for ok, name, color in ((True, "right", RIGHT_COLOR), (False, "wrong", WRONG_COLOR)):
            fig.add_trace(go.Histogram(x=_round(v[correct == ok].tolist()), name=name,
                                       marker_color=color, opacity=0.6, nbinsx=HIST_BINS,
                                       legendgroup=name, showlegend=(n == 0)),
                          row=n // cols + 1, col=n % cols + 1)
    fig.update_layout(barmode="overlay")
    fig.update_xaxes(title_text="attention weight")
    _layout(fig, "Attention weights vary with the input (Figure 3)", 300 * rows + 80)
    return fig


def alpha_scatter(att: dict[str, Any], seed: int = 0):
    """alpha_{s->d1} (x) against alpha_{s->d2} (y) per list, right and wrong; the diagonal."""
    go = _go()
    correct, alpha = _by_correctness(att)
    keep = _subsample(len(correct), seed=seed)
    fig = go.Figure()
    for ok, name, color in ((True, "right", RIGHT_COLOR), (False, "wrong", WRONG_COLOR)):
        idx = keep[correct[keep] == ok]
        fig.add_trace(go.Scatter(x=_round(alpha[idx, 0].tolist()), y=_round(alpha[idx, 1].tolist()),
                                 mode="markers", name=f"{name} ({int((correct == ok).sum())})",
                                 marker=dict(color=color, size=5, opacity=0.6)))
    lo, hi = float(alpha[:, :2].min()), float(alpha[:, :2].max())
    fig.add_trace(go.Scatter(x=[lo, hi], y=[lo, hi], mode="lines", name="alpha_d1 = alpha_d2",
                             line=dict(color=CLEAN_COLOR, dash="dot")))
    k = att["alpha_keys"]
    fig.update_xaxes(title_text=f"SEP \u2192 {k[0]} weight (layer 0)")
    fig.update_yaxes(title_text=f"SEP \u2192 {k[1]} weight (layer 0)")
    _layout(fig, "The model fails where SEP weighs both digits alike (Figure 4)", 520)
    return fig


def error_scatter(att: dict[str, Any]):
    """The wrong lists at (d1, d2)."""
    go = _go()
    correct = np.asarray(att["correct"], dtype=bool)
    digits = np.asarray(att["digits"])[~correct]
    fig = go.Figure(go.Scatter(x=digits[:, 0].tolist(), y=digits[:, 1].tolist(), mode="markers",
                               marker=dict(color=WRONG_COLOR, size=6, opacity=0.6),
                               name=f"wrong ({len(digits)})"))
    fig.update_xaxes(title_text="d1")
    fig.update_yaxes(title_text="d2")
    _layout(fig, f"Wrong lists by their digits ({len(digits)} of {len(correct)})", 480)
    return fig


# ---- intervention, swapped pairs, separability ---------------------------------------------------

def intervention_bars(ai: dict[str, Any], labels: Sequence[str]):
    """Per-position accuracy before and after the weights are set (and in delta l only)."""
    go = _go()
    fig = go.Figure()
    for key, name, color in (("before", "clean", CLEAN_COLOR), ("after", "weights set", ACC_COLOR)):
        acc = ai[key]["per_position_acc"]
        fig.add_trace(go.Bar(x=list(labels), y=_round(acc), name=name, marker_color=color,
                             text=[f"{a:.3f}" for a in acc], textposition="outside"))
    f = ai["delta_logits"]
    if isinstance(f, dict):
        fig.add_trace(go.Bar(x=[f["position"]], y=[f["acc_after"]], name="in delta l only",
                             marker_color=SEQ_COLOR, text=[f"{f['acc_after']:.3f}"],
                             textposition="outside"))
    edits = ", ".join(f"L{l} ({q},{k}) = {v:g}" for l, q, k, v in ai["edits"])
    fig.update_layout(barmode="group")
    fig.update_yaxes(range=[0, 1.1], title_text="validation accuracy")
    _layout(fig, f"Attention intervention: {edits}", 420)
    return fig


def swapped_histograms(sp: dict[str, Any]):
    """Equation 5's four coefficients over the swapped pairs, and the error rate by alpha gap."""
    go = _go()
    eq5 = sp["eq5"]
    i, j = sp["positions"]
    names = {"E_a": "alpha'_a - alpha_a (E_a)", "E_b": "alpha'_b - alpha_b (E_b)",
             "P_first": f"alpha'_b - alpha_a (P_{i})", "P_second": f"alpha'_a - alpha_b (P_{j})"}
    fig = _subplots(rows=1, cols=5, subplot_titles=[*names.values(), "error rate by |alpha gap|"])
    for c, key in enumerate(names, 1):
        d = eq5[key]
        mids = [(a + b) / 2 for a, b in zip(d["edges"][:-1], d["edges"][1:])]
        fig.add_trace(go.Bar(x=_round(mids), y=d["counts"], marker_color=HEAD_COLORS[c - 1],
                             showlegend=False), row=1, col=c)
    bins = sp["errors_by_gap"]["bins"]
    fig.add_trace(go.Bar(x=[f"{b['lo']:.2f}-{b['hi']:.2f}" for b in bins],
                         y=[b["error_rate"] for b in bins], marker_color=WRONG_COLOR,
                         showlegend=False), row=1, col=5)
    _layout(fig, f"Swapped pairs: {sp['n_pairs']} pairs ({i}, {j}); the larger weight stays with "
            f"its position in {100 * sp['position_order_kept']:.1f}%", 380)
    return fig


def svc_points(svc: dict[str, Any]):
    """The projected output residuals in 2D (PCA, and UMAP when computed), by output position."""
    from ..analysis.order_scale import svc_margin_text

    go = _go()
    pts = svc["points"]
    views = [("PCA", pts["pca"])] + ([("UMAP", pts["umap"])] if pts.get("umap") else [])
    fig = _subplots(rows=1, cols=len(views), subplot_titles=[v[0] for v in views])
    label = np.asarray(pts["label"])
    for c, (_, xy) in enumerate(views, 1):
        xy = np.asarray(xy, dtype=np.float64)
        for n, name in enumerate(svc["labels"]):
            sel = label == n
            fig.add_trace(go.Scatter(x=_round(xy[sel, 0].tolist()), y=_round(xy[sel, 1].tolist()),
                                     mode="markers", name=name, legendgroup=name,
                                     showlegend=(c == 1),
                                     marker=dict(size=5, opacity=0.6,
                                                 color=HEAD_COLORS[n % len(HEAD_COLORS)])),
                          row=1, col=c)
    _layout(fig, f"Output residuals projected on W_pos: SVC accuracy {svc['accuracy']:.4f}, "
            + svc_margin_text(svc), 460)
    return fig
