"""Plotly figures of one SAE on one model, each from the JSON ``listcopy sae analyze`` writes.

    metrics      baseline and patched accuracy per output position (the reconstruction spliced in)
    alignment    each alive latent's best cosine with some E_d + P_i, with E_d alone, with P_i alone
    alpha        each alive latent's correlation with alpha_{s->d_i} on the lists it fires on
    swaps        latents shared by swapped pairs: the median ratio of their activations
    steering     one latent scaled: the fraction of lists whose outputs swap, per factor
"""

from __future__ import annotations

from typing import Any

from .figures import ACC_COLOR, CLEAN_COLOR, SEQ_COLOR, WRONG_COLOR, _go, _layout, _round

MAX_LATENTS = 60  # bars and heatmap rows beyond this: the strongest latents only


def sae_accuracy_bars(m: dict[str, Any]):
    """Baseline and patched accuracy per output position and over all of them."""
    go = _go()
    names = ["all", *m["per_position"]]
    base = [m["baseline_acc"], *(v["baseline_acc"] for v in m["per_position"].values())]
    patched = [m["patched_acc"], *(v["patched_acc"] for v in m["per_position"].values())]
    fig = go.Figure()
    fig.add_trace(go.Bar(x=names, y=_round(base), name="model", marker_color=CLEAN_COLOR))
    fig.add_trace(go.Bar(x=names, y=_round(patched), name="SAE reconstruction spliced in",
                         marker_color=ACC_COLOR))
    fig.update_layout(barmode="group")
    fig.update_yaxes(range=[0, 1.02], title_text="accuracy")
    fig.update_xaxes(title_text="output position", type="category")
    _layout(fig, f"Patched accuracy: {m['baseline_acc']:.4f} \u2192 {m['patched_acc']:.4f}", 400)
    return fig


def sae_alignment_bars(a: dict[str, Any], limit: int = MAX_LATENTS):
    """Alive latents sorted by their best cosine with some E_d + P_i (and with E_d, P_i alone)."""
    go = _go()
    rows = sorted((r for r in a["latents"] if r["alive"]), key=lambda r: -r["cosine"])[:limit]
    x = [f"{r['latent']}: {r['digit']}@{r['position']}" for r in rows]
    fig = go.Figure()
    for key, name, color in (("cosine", "E_d + P_i (best)", ACC_COLOR),
                             ("token_cosine", "E_d alone", SEQ_COLOR),
                             ("position_cosine", "P_i alone", CLEAN_COLOR)):
        fig.add_trace(go.Bar(x=x, y=_round([r[key] for r in rows]), name=name,
                             marker_color=color))
    fig.add_hline(y=a["threshold"], line_dash="dash", line_color=WRONG_COLOR,
                  annotation_text=f"aligned > {a['threshold']:g}")
    fig.update_layout(barmode="group")
    fig.update_yaxes(range=[-1, 1.02], title_text="cosine with the decoder direction")
    fig.update_xaxes(title_text="latent: best digit@position", type="category")
    _layout(fig, f"Decoder directions: {a['n_aligned']} of {a['n_alive']} alive latents aligned "
                 "with some E_d + P_i", 440)
    return fig


def sae_alpha_heatmap(t: dict[str, Any], limit: int = MAX_LATENTS):
    """corr(latent activation, alpha_{s->d_i}) over the lists each latent fires on; kind as text."""
    go = _go()
    rows = sorted(t["latents"], key=lambda r: -r["frac_active"])[:limit]
    n = max((len(r["corr_active"]) for r in rows), default=0)
    cols = [f"alpha \u2192 d{i + 1}" for i in range(n)]
    fig = go.Figure(go.Heatmap(
        z=[_round(r["corr_active"], 3) for r in rows], x=cols,
        y=[f"{r['latent']} ({r['kind']})" for r in rows], zmin=-1, zmax=1, colorscale="RdBu",
        reversescale=True, colorbar=dict(title="corr"),
        hovertemplate="latent %{y}<br>%{x}<br>corr %{z:.3f}<extra></extra>"))
    fig.update_yaxes(autorange="reversed", type="category", title_text="latent (kind)")
    _layout(fig, f"Latent activations against SEP's attention ({t['n_graded']} graded, "
                 f"{t['n_binary']} binary, {t['n_other']} other)", 160 + 18 * max(len(rows), 8))
    return fig


def sae_swap_bars(s: dict[str, Any]):
    """Per latent shared most by swapped pairs: the median of z(a, b) / z(b, a)."""
    go = _go()
    rows = s.get("latents") or []
    fig = go.Figure(go.Bar(
        x=[str(r["latent"]) for r in rows], y=_round([r["median_ratio"] for r in rows]),
        marker_color=ACC_COLOR, hovertext=[f"shared by {r['n_shared']} pairs" for r in rows],
        hoverinfo="text+x+y"))
    fig.add_hline(y=1, line_dash="dash", line_color=CLEAN_COLOR)
    fig.update_xaxes(title_text="latent", type="category")
    fig.update_yaxes(title_text="median activation ratio, list / swapped list")
    _layout(fig, f"Swapped pairs: {s.get('mean_shared', 0):.2f} of {s.get('mean_active', 0):.2f} "
                 f"active latents shared ({s.get('n_pairs', 0)} pairs)", 400)
    return fig


def sae_steering_heatmap(st: dict[str, Any], limit: int = MAX_LATENTS):
    """The fraction of lists whose outputs swap when one latent is scaled, per factor."""
    go = _go()
    factors = [f"{f:g}" for f in st["factors"]]
    rows = sorted((r for r in st["latents"] if r["by_factor"]),
                  key=lambda r: -max(v["swap"] for v in r["by_factor"].values()))[:limit]
    z = [[_round(r["by_factor"].get(f, {}).get("swap")) for f in factors] for r in rows]
    fig = go.Figure(go.Heatmap(
        z=z, x=[f"x{f}" for f in factors], y=[f"{r['latent']} ({r['n_lists']} lists)" for r in rows],
        zmin=0, zmax=1, colorscale="Viridis", colorbar=dict(title="swap"),
        hovertemplate="latent %{y}<br>factor %{x}<br>swap %{z:.3f}<extra></extra>"))
    fig.update_xaxes(type="category", title_text="factor on the latent")
    fig.update_yaxes(autorange="reversed", type="category", title_text="latent")
    _layout(fig, "Steering: outputs swapped when one latent is scaled",
            160 + 18 * max(len(rows), 8))
    return fig
