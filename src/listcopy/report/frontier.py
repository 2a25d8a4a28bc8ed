"""The capacity frontier's section of a sweep report: the phase diagram of the smallest d_model
that passes each point, against the bits SEP must carry (``list_len * log2(n_digits)``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .html import Figure, Section, Table

FRONTIER_FILE = "frontier.json"


def load_frontier(sweep_dir: Path) -> dict[str, Any] | None:
    path = Path(sweep_dir) / FRONTIER_FILE
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError, RecursionError):
        return None
    return data if isinstance(data, dict) and isinstance(data.get("points"), list) else None


def phase_diagram(data: dict[str, Any]):
    """Minimal d_model against bits, one marker per point, labelled by its settings; the
    reference line d_model = bits."""
    import plotly.graph_objects as go

    points = data["points"]
    found = [p for p in points if p["minimal_d_model"] is not None]
    missed = [p for p in points if p["minimal_d_model"] is None]
    label = lambda p: ", ".join(f"{k.split('.')[-1]}={v}" for k, v in p["point"].items())  # noqa: E731
    fig = go.Figure()
    fig.add_trace(go.Scatter(x=[p["bits"] for p in found], y=[p["minimal_d_model"] for p in found],
                             mode="markers+text", text=[label(p) for p in found],
                             textposition="top center", name="minimal d_model",
                             marker=dict(size=11, color="#1f77b4")))
    if missed:
        fig.add_trace(go.Scatter(x=[p["bits"] for p in missed], y=[data["d_max"]] * len(missed),
                                 mode="markers", text=[label(p) for p in missed],
                                 name=f"not reached by d_model {data['d_max']}",
                                 marker=dict(size=11, symbol="triangle-up", color="#d62728")))
    bits = [p["bits"] for p in points] or [1.0]
    hi = max(bits) * 1.1
    fig.add_trace(go.Scatter(x=[0, hi], y=[0, hi], mode="lines", name="d_model = L log2(n) bits",
                             line=dict(dash="dash", color="#7f7f7f")))
    fig.update_layout(title=f"Capacity frontier ({data.get('task', 'copy')}): smallest d_model "
                            f"at which {data.get('need', 0.5):.0%} of seeds reach "
                            f"{data.get('threshold', 0.999)}",
                      xaxis_title="bits through SEP: list_len x log2(n_digits)",
                      yaxis_title="minimal d_model", height=480, template="plotly_white")
    return fig


def frontier_section(data: dict[str, Any]) -> Section:
    rows = []
    for p in data["points"]:
        row = {k: v for k, v in p["point"].items()}
        row["minimal d_model"] = p["minimal_d_model"] if p["minimal_d_model"] is not None \
            else f"> {data['d_max']}"
        row["bits"] = round(p["bits"], 2)
        row["tried (d_model: fraction of seeds)"] = ", ".join(
            f"{d}: {f:.2f}" for d, f in sorted(p["tried"].items(), key=lambda kv: int(kv[0])))
        rows.append(row)
    columns = list(rows[0]) if rows else []
    return Section(
        id="frontier", title="Capacity frontier",
        what=("For each point, d_model was searched over powers of two and then bisected for the "
              "smallest width at which at least half of the seeds reach the threshold; the dashed "
              "line is the information SEP must carry, list_len x log2(n_digits) bits."
              + ("" if data.get("all_seeds", True) else
                 " A width's other seeds stopped once enough had passed, so a passing width's "
                 "fraction is a lower bound (--all-seeds trains every seed to its end).")),
        numbers=f"{len(rows)} points, {data.get('seeds')} seeds each",
        figures=[Figure("frontier_phase_diagram", phase_diagram(data))],
        tables=[Table(columns, rows, caption="Minimal d_model per point")])
