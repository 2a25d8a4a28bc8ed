"""Plotly figures of the analyses, one function per figure, each from the analysis's JSON.

Every function takes the dict that ``listcopy.analysis.analyze`` (or ``listcopy analyze --json``)
holds under the analysis's key, so a report can be drawn from a live model or from a saved JSON.
Conventions of the field, as in the seed notebook: attention heatmaps with query rows and key
columns (y reversed, labels d1 d2 SEP o1 o2, colour scale fixed to 0..1, Viridis); ablations as
bars against the clean model's numbers (dashed lines); embeddings as scatters labelled by digit.
Sizes are kept bounded (points subsampled, big matrices cut) so a report stays a few MB.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np

from .html import Table

ACC_COLOR = "#1f77b4"
SEQ_COLOR = "#ff7f0e"
CLEAN_COLOR = "#7f7f7f"
RIGHT_COLOR = "#2ca02c"
WRONG_COLOR = "#d62728"
HEAD_COLORS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#8c564b", "#e377c2", "#17becf",
               "#bcbd22")
MAX_SCATTER_POINTS = 4000  # SEP-attention scatter: a seeded subsample beyond this
MAX_ANGLE_DIGITS = 200     # pairwise-angle heatmaps: the first digits only beyond this
MAX_EDGE_BARS = 40         # edge bar chart: the largest effects only beyond this

Metrics = dict[str, Any]


def _go():
    import plotly.graph_objects as go

    return go


def _subplots(**kwargs):
    from plotly.subplots import make_subplots

    return make_subplots(**kwargs)


def _round(values: Any, digits: int = 4) -> Any:
    """Nested lists of floats to ``digits`` significant digits (None stays None): smaller pages."""
    if isinstance(values, (list, tuple)):
        return [_round(v, digits) for v in values]
    if isinstance(values, float):
        return float(f"{values:.{digits}g}") if math.isfinite(values) else None
    return values


def _layout(fig, title: str, height: int, **kwargs) -> None:
    kwargs.setdefault("margin", dict(l=60, r=30, t=80, b=50))
    fig.update_layout(title_text=title, height=height, template="plotly_white", **kwargs)


def num(value: Any, fmt: str = ".4f") -> str:
    """A number for a label or hover text; ``-`` for a missing one (a non-finite loss is None)."""
    return "-" if value is None else format(value, fmt)


def token_text(token: int, n_digits: int, mask_token: bool = False) -> str:
    """A vocabulary id as the report shows it: digits as numbers, then SEP (with a MASK token,
    as the research line's: MASK, then SEP)."""
    if token < n_digits:
        return str(token)
    return "MASK" if mask_token and token == n_digits else "SEP"


# ---- header ------------------------------------------------------------------------------------

def training_curve(history: Sequence[dict[str, Any]], threshold: float | None = None):
    """Train and validation loss (log scale) and validation acc / seq_acc against step."""
    go = _go()
    steps = [h["step"] for h in history]
    fig = _subplots(rows=1, cols=2, subplot_titles=("Loss", "Validation accuracy"),
                    horizontal_spacing=0.1)
    for key, name, color in (("train_loss", "train loss", "#9467bd"), ("val_loss", "val loss", "#8c564b")):
        fig.add_trace(go.Scatter(x=steps, y=_round([h.get(key) for h in history]), name=name,
                                 mode="lines", line=dict(color=color)), row=1, col=1)
    for key, name, color in (("acc", "acc", ACC_COLOR), ("seq_acc", "seq_acc", SEQ_COLOR)):
        fig.add_trace(go.Scatter(x=steps, y=_round([h.get(key) for h in history]), name=name,
                                 mode="lines", line=dict(color=color)), row=1, col=2)
    if threshold is not None:
        fig.add_hline(y=threshold, line_dash="dot", line_color=CLEAN_COLOR, row=1, col=2,
                      annotation_text=f"early stop {threshold:g}", annotation_position="bottom right")
    fig.update_yaxes(type="log", title_text="cross-entropy", row=1, col=1)
    fig.update_yaxes(range=[0, 1.02], title_text="accuracy", row=1, col=2)
    fig.update_xaxes(title_text="step")
    _layout(fig, "Training curve", 380)
    return fig


# ---- attention ---------------------------------------------------------------------------------

def attention_heatmaps(patterns: Sequence, labels: Sequence[str], title: str, what: str = "Attention"):
    """One heatmap per layer (columns) and head (rows) of patterns (n_layers, H, T, T)."""
    go = _go()
    n_layers, n_heads = len(patterns), len(patterns[0])
    titles = [f"Layer {l} {what}" + (f", head {h}" if n_heads > 1 else "")
              for h in range(n_heads) for l in range(n_layers)]
    fig = _subplots(rows=n_heads, cols=n_layers, subplot_titles=titles, horizontal_spacing=0.08,
                    vertical_spacing=0.12 if n_heads > 1 else 0.1)
    labels = list(labels)
    for h in range(n_heads):
        for l in range(n_layers):
            z = _round(patterns[l][h], 3)
            fig.add_trace(go.Heatmap(
                z=z, x=labels, y=labels, colorscale="Viridis", zmin=0, zmax=1,
                showscale=(l == n_layers - 1 and h == 0), colorbar=dict(title="weight"),
                hovertemplate="query %{y}<br>key %{x}<br>weight %{z:.3f}<extra></extra>"),
                row=h + 1, col=l + 1)
    fig.update_xaxes(title_text="Key Position", type="category")
    fig.update_yaxes(title_text="Query Position", autorange="reversed", type="category")
    _layout(fig, title, 80 + 370 * n_heads)
    return fig


# ---- ablations ---------------------------------------------------------------------------------

def metric_bars(title: str, entries: Sequence[tuple[str, Metrics]], base: Metrics,
                x_title: str = "", fig=None, col: int | None = None, legend: bool = True):
    """Grouped bars of acc and seq_acc for each ablation, the clean model first, its numbers as
    dashed lines."""
    go = _go()
    own = fig is None
    if own:
        fig = go.Figure()
    names = ["clean"] + [name for name, _ in entries]
    values = [base] + [m for _, m in entries]
    where = dict(row=1, col=col) if col is not None else {}
    for key, color in (("acc", ACC_COLOR), ("seq_acc", SEQ_COLOR)):
        hover = [f"{key} {m[key]:.4f}" + (f" ({m[key] - base[key]:+.4f})" if i else " (clean)")
                 + f"<br>loss {num(m.get('loss'))}" for i, m in enumerate(values)]
        fig.add_trace(go.Bar(x=names, y=_round([m[key] for m in values]), name=key,
                             marker=dict(color=color, opacity=[0.55] + [1.0] * len(entries)),
                             hovertext=hover, hoverinfo="text+x",
                             showlegend=legend, legendgroup=key), **where)
        fig.add_hline(y=base[key], line_dash="dash", line_color=color, opacity=0.8, **where)
    if own:
        fig.update_layout(barmode="group")
        fig.update_yaxes(range=[0, 1.02], title_text="validation accuracy")
        fig.update_xaxes(title_text=x_title)
        _layout(fig, title, 420)
    return fig


def mean_attention_bars(ablated: Metrics, base: Metrics):
    return metric_bars("Mean-attention ablation: every layer attends with its mean pattern",
                       [("mean attention", ablated)], base)


def pos_ablation_bars(pos: dict[str, Metrics], base: Metrics):
    from ..analysis.common import stage_label

    entries = [(stage_label(name), m) for name, m in pos.items()]
    return metric_bars("Positional embedding removed (but at SEP), at one residual point",
                       entries, base, x_title="W_pos subtracted after")


def skip_ablation_bars(skip: dict[str, dict[str, Metrics]], base: Metrics):
    fig = _subplots(rows=1, cols=2, shared_yaxes=True, horizontal_spacing=0.05,
                    subplot_titles=("zero: layer output only", "mean: resid_pre -> its mean"))
    for col, kind in ((1, "zero"), (2, "mean")):
        entries = [(("layer " + k) if k != "all" else "all layers", m) for k, m in skip[kind].items()]
        metric_bars("", entries, base, fig=fig, col=col, legend=(col == 1))
    fig.update_layout(barmode="group")
    fig.update_yaxes(range=[0, 1.02])
    fig.update_yaxes(title_text="validation accuracy", row=1, col=1)
    _layout(fig, "Skip connections ablated, per layer and at all layers", 420)
    return fig


# ---- logit lens and attention flow ---------------------------------------------------------------

def attention_flow(lens: dict[str, Any], n_digits: int, min_weight: float = 0.02,
                   mask_token: bool = False):
    """The research line's attention-flow diagram: a node per (stage, position) labelled with the
    logit lens's top token, coloured by the target's probability; an edge per attention weight
    from a key at one stage to a query at the next, its width and opacity the weight."""
    go = _go()
    labels, stages = lens["labels"], lens["stage_labels"]
    T = len(labels)
    shapes, hover = _flow_edges(lens["attention"], labels, min_weight)
    fig = go.Figure()
    fig.add_trace(go.Scatter(x=hover["x"], y=hover["y"], mode="markers",
                             marker=dict(size=8, opacity=0), hovertext=hover["text"],
                             hoverinfo="text", showlegend=False))
    fig.add_trace(_lens_nodes(lens, n_digits, go, mask_token))
    tokens = " ".join(token_text(t, n_digits, mask_token) for t in lens["tokens"])
    L = (T - 1) // 2
    targets = " ".join(token_text(t, n_digits, mask_token) for t in lens["targets"][L + 1:])
    fig.update_layout(shapes=shapes)
    fig.update_xaxes(tickvals=list(range(len(stages))), ticktext=list(stages), title_text="stage",
                     range=[-0.4, len(stages) - 0.6], showgrid=False, zeroline=False)
    fig.update_yaxes(tickvals=list(range(T)), ticktext=list(labels), autorange="reversed",
                     title_text="position", showgrid=False, zeroline=False)
    _layout(fig, f"Attention flow with the logit lens, validation example {lens['example_index']}: "
            f"[{tokens}] \u2192 [{targets}]", 120 + 70 * T)
    return fig


def _flow_edges(attn: Sequence, labels: Sequence[str], min_weight: float):
    """The flow diagram's lines (dotted residual links, one line per attention weight of at least
    ``min_weight``, coloured by head) and the hover points at the middle of each weight's line."""
    T = len(labels)
    n_heads = len(attn[0]) if attn else 1
    shapes = []
    hover: dict[str, list] = {"x": [], "y": [], "text": []}
    for s in range(len(attn)):
        for t in range(T):  # the residual stream carries each position to the next stage
            shapes.append(dict(type="line", x0=s, y0=t, x1=s + 1, y1=t, layer="below",
                               line=dict(color="#cccccc", width=1, dash="dot")))
        for h in range(n_heads):
            for q in range(T):
                for k in range(T):
                    w = attn[s][h][q][k]
                    if w is None or w < min_weight:
                        continue
                    shapes.append(dict(type="line", x0=s, y0=k, x1=s + 1, y1=q, layer="below",
                                       opacity=round(0.15 + 0.85 * w, 3),
                                       line=dict(color=HEAD_COLORS[h % len(HEAD_COLORS)],
                                                 width=round(0.5 + 7 * w, 2))))
                    head = f" head {h}" if n_heads > 1 else ""
                    hover["x"].append(s + 0.5)
                    hover["y"].append((q + k) / 2)
                    hover["text"].append(f"layer {s}{head}: {labels[q]} attends to {labels[k]}: "
                                         f"{w:.3f}")
    return shapes, hover


def _lens_nodes(lens: dict[str, Any], n_digits: int, go, mask_token: bool = False):
    """The flow diagram's nodes: one per (stage, position), the logit lens's top token on it."""
    labels = lens["labels"]
    xs, ys, text, color, hover = [], [], [], [], []
    for s, stage in enumerate(lens["stage_labels"]):
        for t in range(len(labels)):
            top = lens["top_token"][s][t]
            xs.append(s)
            ys.append(t)
            text.append(token_text(top, n_digits, mask_token))
            color.append(lens["target_prob"][s][t])
            target = token_text(lens["targets"][t], n_digits, mask_token)
            hover.append(f"{stage}, {labels[t]}: top {token_text(top, n_digits, mask_token)} "
                         f"(p {lens['top_prob'][s][t]:.3f}); target "
                         f"{target} p {lens['target_prob'][s][t]:.3f}")
    return go.Scatter(
        x=xs, y=ys, mode="markers+text", text=text, textfont=dict(color="white", size=11),
        marker=dict(size=34, color=_round(color, 3), colorscale="Viridis", cmin=0, cmax=1,
                    line=dict(color="#333", width=1), colorbar=dict(title="p(target)")),
        hovertext=hover, hoverinfo="text", showlegend=False)


def logit_lens_accuracy(lens: dict[str, Any]):
    go = _go()
    fig = go.Figure(go.Bar(x=list(lens["stage_labels"]), y=_round(list(lens["val_acc"])),
                           marker_color=ACC_COLOR, text=[f"{a:.3f}" for a in lens["val_acc"]],
                           textposition="outside",
                           hovertemplate="%{x}: acc %{y:.4f}<extra></extra>"))
    fig.update_yaxes(range=[0, 1.1], title_text="validation accuracy (output positions)")
    fig.update_xaxes(title_text="residual stream decoded after")
    _layout(fig, "Logit-lens accuracy per stage", 360)
    return fig


# ---- edges ---------------------------------------------------------------------------------------

def sorted_edges(edges: dict[str, Any]) -> list[dict[str, Any]]:
    """Edge rows by effect: the largest drop in accuracy first (then by loss increase)."""
    return sorted(edges["edges"], key=lambda r: (r["delta_acc"], -(r["delta_loss"] or 0.0),
                                                 r["layer"], r["query"], r["key"]))


def edge_bars(edges: dict[str, Any], limit: int = MAX_EDGE_BARS):
    go = _go()
    rows = sorted_edges(edges)
    tol = edges["tolerance"]
    if len(rows) > limit:
        rows = sorted(rows, key=lambda r: -abs(r["delta_acc"]))[:limit]
        rows = sorted(rows, key=lambda r: r["delta_acc"])
    names = [f"L{r['layer']} {r['label']}" for r in rows]
    removable = [abs(r["delta_acc"]) < tol for r in rows]
    fig = go.Figure(go.Bar(
        y=names, x=_round([r["delta_acc"] for r in rows]), orientation="h",
        marker_color=[CLEAN_COLOR if ok else WRONG_COLOR for ok in removable],
        hovertext=[f"L{r['layer']} {r['label']}: acc {r['acc']:.4f} ({r['delta_acc']:+.4f}), "
                   f"loss {num(r['loss'])} ({num(r['delta_loss'], '+.4f')})"
                   + (" - removable" if ok else "") for r, ok in zip(rows, removable)],
        hoverinfo="text"))
    fig.add_vline(x=-tol, line_dash="dot", line_color=CLEAN_COLOR)
    fig.update_yaxes(autorange="reversed", type="category")
    fig.update_xaxes(title_text="change in validation accuracy when the edge is zeroed")
    extra = f" (the {limit} largest of {len(edges['edges'])})" if len(edges["edges"]) > limit else ""
    _layout(fig, f"Edge ablation: one attention edge zeroed at a time{extra}",
            max(300, 120 + 20 * len(rows)), margin=dict(l=130, r=30, t=80, b=50))
    return fig


def edge_table(edges: dict[str, Any]) -> Table:
    rows = sorted_edges(edges)
    tol = edges["tolerance"]
    out = [{"layer": r["layer"], "edge": r["label"], "acc": r["acc"], "delta_acc": r["delta_acc"],
            "seq_acc": r["seq_acc"], "delta_loss": r["delta_loss"],
            "removable": abs(r["delta_acc"]) < tol} for r in rows]
    return Table(["layer", "edge", "acc", "delta_acc", "seq_acc", "delta_loss", "removable"], out,
                 caption=f"Every edge, sorted by effect (largest accuracy drop first); removable: "
                         f"|delta acc| < {tol:g}",
                 headers={"edge": "edge (query<-key)", "delta_acc": "\u0394 acc",
                          "delta_loss": "\u0394 loss"},
                 bad=[not o["removable"] for o in out],
                 formats={"acc": ".4f", "delta_acc": "+.4f", "seq_acc": ".4f", "delta_loss": "+.4f"})


# ---- SEP attention -------------------------------------------------------------------------------

def sep_scatter(sep: dict[str, Any], max_points: int = MAX_SCATTER_POINTS, seed: int = 0):
    """Layer-0 scores from SEP to d1 (x) and d2 (y) per validation example, coloured by whether
    the model gets the list right. With one digit: score against the digit."""
    go = _go()
    correct = np.asarray(sep["correct"], dtype=bool)
    n = len(correct)
    keep = np.arange(n)
    if n > max_points:
        keep = np.sort(np.random.default_rng(seed).choice(n, max_points, replace=False))
    scores = np.asarray(sep["scores"], dtype=np.float64)  # (N, H, L)
    digits = np.asarray(sep["digits"])                      # (N, L)
    keys = sep["keys"]
    n_heads, L = scores.shape[1], scores.shape[2]
    fig = _subplots(rows=1, cols=n_heads, subplot_titles=[f"head {h}" for h in range(n_heads)]
                    if n_heads > 1 else None)
    for h in range(n_heads):
        for ok, name, color in ((True, "right", RIGHT_COLOR), (False, "wrong", WRONG_COLOR)):
            idx = keep[correct[keep] == ok]
            if L >= 2:
                x, y = scores[idx, h, 0], scores[idx, h, 1]
            else:
                x, y = digits[idx, 0].astype(float), scores[idx, h, 0]
            custom = digits[idx].tolist()
            fig.add_trace(go.Scatter(
                x=_round(x.tolist()), y=_round(y.tolist()), mode="markers", name=f"{name} ({len(idx)})",
                marker=dict(color=color, size=5, opacity=0.6), customdata=custom,
                legendgroup=name, showlegend=(h == 0),
                hovertemplate=("list " + " ".join(f"%{{customdata[{i}]}}" for i in range(L))
                               + "<br>x %{x:.3f}<br>y %{y:.3f}<extra>" + name + "</extra>")),
                row=1, col=h + 1)
    if L >= 2:
        fig.update_xaxes(title_text=f"score SEP \u2192 {keys[0]}")
        fig.update_yaxes(title_text=f"score SEP \u2192 {keys[1]}")
    else:
        fig.update_xaxes(title_text=f"{keys[0]}")
        fig.update_yaxes(title_text=f"score SEP \u2192 {keys[0]}")
    shown = f" ({len(keep)} of {n} shown)" if len(keep) < n else ""
    _layout(fig, f"Layer-{sep['layer']} attention scores from SEP to the input digits{shown}", 480)
    return fig


# ---- geometry ------------------------------------------------------------------------------------

def _digit_scatter(fig, coords: Sequence[Sequence[float]], texts: Sequence[str], values, go, row,
                   col, three_d: bool = False, colorscale: str = "Turbo", showscale: bool = False):
    c = np.asarray(coords, dtype=np.float64)
    marker = dict(size=4 if three_d else 7, color=list(values), colorscale=colorscale,
                  showscale=showscale, colorbar=dict(title="digit") if showscale else None)
    common = dict(mode="markers+text", text=list(texts), textposition="top center",
                  textfont=dict(size=8 if three_d else 9), marker=marker, showlegend=False,
                  hovertemplate="%{text}<extra></extra>")
    if three_d:
        trace = go.Scatter3d(x=_round(c[:, 0].tolist()), y=_round(c[:, 1].tolist()),
                             z=_round(c[:, 2].tolist()) if c.shape[1] > 2 else [0.0] * len(c),
                             **common)
    else:
        trace = go.Scatter(x=_round(c[:, 0].tolist()),
                           y=_round(c[:, 1].tolist()) if c.shape[1] > 1 else [0.0] * len(c),
                           **common)
    fig.add_trace(trace, row=row, col=col)


def _pct(ratio: Sequence[float], i: int) -> str:
    return f"{100 * ratio[i]:.1f}%" if i < len(ratio) and ratio[i] is not None else "-"


GEOMETRY_NAMES = {"W_E": "W_E (digit embeddings)", "W_U": "W_U (digit unembeddings)",
                  "W_pos": "W_pos (positions)"}


def pca_2d(geometry: dict[str, Any], position_labels: Sequence[str]):
    go = _go()
    names = [n for n in ("W_E", "W_U", "W_pos") if n in geometry["pca"]]
    fig = _subplots(rows=1, cols=len(names), subplot_titles=[GEOMETRY_NAMES[n] for n in names],
                    horizontal_spacing=0.07)
    for i, name in enumerate(names, start=1):
        p = geometry["pca"][name]
        coords = p["coords"]
        texts = list(position_labels) if name == "W_pos" else [str(d) for d in range(len(coords))]
        _digit_scatter(fig, coords, texts, list(range(len(coords))), go, 1, i,
                       showscale=(name == "W_E"))
        r = p["explained_variance_ratio"]
        fig.update_xaxes(title_text=f"PC1 ({_pct(r, 0)})", row=1, col=i)
        fig.update_yaxes(title_text=f"PC2 ({_pct(r, 1)})", row=1, col=i)
    _layout(fig, "PCA of the embeddings (2D), points labelled by digit", 470)
    return fig


def scatter_3d(title: str, coords_by_name: dict[str, Any], axis: str):
    go = _go()
    names = [n for n, c in coords_by_name.items() if c is not None]
    fig = _subplots(rows=1, cols=max(1, len(names)), specs=[[{"type": "scene"}] * max(1, len(names))],
                    subplot_titles=[GEOMETRY_NAMES[n] for n in names])
    for i, name in enumerate(names, start=1):
        coords = coords_by_name[name]
        _digit_scatter(fig, coords, [str(d) for d in range(len(coords))], list(range(len(coords))),
                       go, 1, i, three_d=True)
    fig.update_scenes(xaxis_title=f"{axis}1", yaxis_title=f"{axis}2", zaxis_title=f"{axis}3")
    _layout(fig, title, 540)
    return fig


def pca_3d(geometry: dict[str, Any]):
    coords = {n: geometry["pca"][n]["coords"] for n in ("W_E", "W_U") if n in geometry["pca"]}
    return scatter_3d("PCA of the embeddings (3D), points labelled by digit", coords, "PC")


def umap_2d(geometry: dict[str, Any]):
    go = _go()
    umap = geometry["umap"] or {}
    names = [n for n in ("W_E", "W_U") if (umap.get(n) or {}).get("2d") is not None]
    fig = _subplots(rows=1, cols=max(1, len(names)), subplot_titles=[GEOMETRY_NAMES[n] for n in names],
                    horizontal_spacing=0.07)
    for i, name in enumerate(names, start=1):
        coords = umap[name]["2d"]
        _digit_scatter(fig, coords, [str(d) for d in range(len(coords))], list(range(len(coords))),
                       go, 1, i, showscale=(i == 1))
        fig.update_xaxes(title_text="UMAP1", row=1, col=i)
        fig.update_yaxes(title_text="UMAP2", row=1, col=i)
    _layout(fig, "UMAP of the embeddings (2D), points labelled by digit", 470)
    return fig


def umap_3d(geometry: dict[str, Any]):
    umap = geometry["umap"] or {}
    coords = {n: (umap.get(n) or {}).get("3d") for n in ("W_E", "W_U")}
    return scatter_3d("UMAP of the embeddings (3D), points labelled by digit", coords, "UMAP")


def angle_heatmaps(geometry: dict[str, Any], limit: int = MAX_ANGLE_DIGITS):
    go = _go()
    names = [n for n in ("W_E", "W_U") if n in geometry["angles"]]
    fig = _subplots(rows=1, cols=len(names), subplot_titles=[GEOMETRY_NAMES[n] for n in names],
                    horizontal_spacing=0.1)
    cut = False
    for i, name in enumerate(names, start=1):
        a = geometry["angles"][name]["pairwise"]
        cut = cut or len(a) > limit
        z = [[None if v is None else round(v, 1) for v in row[:limit]] for row in a[:limit]]
        fig.add_trace(go.Heatmap(z=z, colorscale="Viridis", zmin=0, zmax=180,
                                 showscale=(i == len(names)), colorbar=dict(title="degrees"),
                                 hovertemplate="digits %{y} and %{x}: %{z:.1f}\u00b0<extra></extra>"),
                      row=1, col=i)
        fig.update_xaxes(title_text="digit", row=1, col=i)
        fig.update_yaxes(title_text="digit", autorange="reversed", row=1, col=i)
    title = "Angles between digit vectors" + (f" (first {limit} digits)" if cut else "")
    _layout(fig, title, 480)
    return fig


# ---- probes --------------------------------------------------------------------------------------

def probe_lines(probes: dict[str, Any], n_digits: int):
    go = _go()
    rows = probes["rows"]
    stages = list(dict.fromkeys(r["stage_label"] for r in rows))
    targets = list(dict.fromkeys(r["target"] for r in rows))
    kinds = [k for k in ("logistic", "lda") if any(k in r for r in rows)]
    fig = _subplots(rows=1, cols=2, horizontal_spacing=0.1,
                    subplot_titles=("Probe accuracy", "Probe ROC AUC (macro, one-vs-rest)"))
    palette = HEAD_COLORS
    for ti, target in enumerate(targets):
        for kind in kinds:
            by_stage = {r["stage_label"]: r[kind] for r in rows if r["target"] == target and kind in r}
            for col, metric in ((1, "acc"), (2, "auc")):
                fig.add_trace(go.Scatter(
                    x=stages, y=_round([by_stage.get(s, {}).get(metric) for s in stages]),
                    mode="lines+markers", name=f"{target} {kind}",
                    line=dict(color=palette[ti % len(palette)],
                              dash="solid" if kind == "logistic" else "dash"),
                    legendgroup=f"{target} {kind}", showlegend=(col == 1),
                    hovertemplate=f"{target} {kind} %{{x}}: {metric} %{{y:.4f}}<extra></extra>"),
                    row=1, col=col)
    fig.add_hline(y=1 / max(n_digits, 1), line_dash="dot", line_color=CLEAN_COLOR, row=1, col=1,
                  annotation_text="chance", annotation_position="top right")
    fig.add_hline(y=0.5, line_dash="dot", line_color=CLEAN_COLOR, row=1, col=2,
                  annotation_text="chance", annotation_position="bottom right")
    fig.update_yaxes(range=[0, 1.05], row=1, col=1, title_text="validation accuracy")
    fig.update_yaxes(range=[0.4, 1.02], row=1, col=2, title_text="AUC")
    fig.update_xaxes(title_text=f"residual stream at {probes['position']} after")
    _layout(fig, f"Linear probes for each input digit at {probes['position']}", 420)
    return fig
