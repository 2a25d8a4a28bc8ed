"""The report of a sweep: its results tables, mean accuracy over two axes, every seed, and the
steps each run needed to reach the early-stop accuracy.

    >>> from listcopy.report import sweep_report
    >>> sweep_report("sweeps/seed_grid", "sweep.html", axes=("model.d_model", "model.n_layers"))

It reads the sweep's database (``sweep.db``) only, so it works while the sweep is running.
Tables are those of ``listcopy results``; a configuration reported under several names (the
notebook's ``d128`` and ``d128_3layer``) counts once in the heatmap. The page is a loop over a
table of section builders (``SWEEP_SECTIONS``), each drawing one section from a
:class:`SweepContext` (or none: the frontier's only in a ``listcopy frontier`` directory).
"""

from __future__ import annotations

import json
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from ..config import ConfigError
from .html import Figure, Page, Section, Table
from .output import ReportInfo, Stages, check_out, render_and_write

DEFAULT_AXES = ("model.d_model", "model.n_layers")
ACC_COLOR = "#1f77b4"
REACHED_COLOR = "#2ca02c"
MISSED_COLOR = "#d62728"


def sweep_report(sweep_dir: str | Path, out: str | Path, axes: Sequence[str] = DEFAULT_AXES,
                 png_dir: str | Path | None = None, progress: bool = True) -> ReportInfo:
    """Write the report of the sweep in ``sweep_dir`` to ``out`` (atomically)."""
    from ..sweep.kinds import MODEL, kind_of
    from ..sweep.results import load_rows
    from ..sweep.store import StoreError

    out = check_out(out, png_dir)
    axes = tuple(axes)
    if len(axes) != 2 or axes[0] == axes[1]:
        raise ConfigError(f"--axes {','.join(axes)}: give two different keys, e.g. "
                          "model.d_model,model.n_layers")
    with Stages("sweep report", 4 + (png_dir is not None), progress) as stages:
        with stages("load"):
            try:
                rows = load_rows(sweep_dir)
            except StoreError as err:
                raise ConfigError(str(err)) from None
            if rows and kind_of(rows[0]["config"]) is not MODEL:
                raise ConfigError(f"{sweep_dir}: a sweep of SAEs; its tables: listcopy results "
                                  f"{sweep_dir}; an SAE's page: listcopy report MODEL --sae RUN_DIR")
            keys = resolve_axes(rows, axes)
        with stages("figures"):
            page = build_sweep_page(rows, keys, Path(sweep_dir))
        size, pngs = render_and_write(page, out, png_dir, stages)
    return ReportInfo.of(page, out, size, pngs, stages.times)


# ---- data ------------------------------------------------------------------------------------

def resolve_axes(rows: Sequence[dict[str, Any]], axes: Sequence[str]) -> tuple[str, str]:
    """Dotted keys for ``axes`` (dotted, or short names like ``d_model`` when unambiguous)."""
    from ..config import dotted_key

    out = [dotted_key(axis.strip(), "--axes",
                      "use keys such as model.d_model, model.n_layers, train.lr") for axis in axes]
    if out[0] == out[1]:
        raise ConfigError(f"--axes: both name {out[0]}; give two different keys")
    return out[0], out[1]


def distinct_runs(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per run (a configuration reported under several names counts once)."""
    seen: dict[str, dict[str, Any]] = {}
    for r in rows:
        seen.setdefault(r["key"], r)
    return list(seen.values())


def groups(rows: Sequence[dict[str, Any]]) -> list[tuple[str, list[dict[str, Any]]]]:
    """Entries grouped as ``listcopy results`` aggregates them: same name and settings but the
    seed; labels are the names, made unique where two groups share one."""
    by: dict[str, list[dict[str, Any]]] = {}
    names: dict[str, str] = {}
    for r in rows:
        f = r["config"].flat()
        f.pop("train.seed", None)
        gid = json.dumps([r["name"], f], sort_keys=True, default=str)
        if gid not in by:
            by[gid] = []
            names[gid] = r["name"]
        if all(m["key"] != r["key"] for m in by[gid]):
            by[gid].append(r)
    counts: dict[str, int] = {}
    out = []
    for gid, members in by.items():
        name = names[gid]
        counts[name] = counts.get(name, 0) + 1
        label = name if list(names.values()).count(name) == 1 else f"{name} [{counts[name]}]"
        out.append((label, members))
    return out


def mean_acc_grid(rows: Sequence[dict[str, Any]], keys: tuple[str, str]):
    """(x values, y values, mean acc [y][x] or None, run counts [y][x]) over finished runs."""
    runs = [r for r in distinct_runs(rows) if r["status"] == "done" and r["acc"] is not None]
    xs = sorted({json.dumps(r["config"].flat()[keys[0]]) for r in runs}, key=_sort_key)
    ys = sorted({json.dumps(r["config"].flat()[keys[1]]) for r in runs}, key=_sort_key)
    cells: dict[tuple[str, str], list[float]] = {}
    for r in runs:
        f = r["config"].flat()
        cells.setdefault((json.dumps(f[keys[0]]), json.dumps(f[keys[1]])), []).append(r["acc"])
    z = [[statistics.fmean(cells[(x, y)]) if (x, y) in cells else None for x in xs] for y in ys]
    n = [[len(cells.get((x, y), [])) for x in xs] for y in ys]
    return [json.loads(x) for x in xs], [json.loads(y) for y in ys], z, n


def _sort_key(text: str):
    v = json.loads(text)
    return (0, v, "") if isinstance(v, (int, float)) and not isinstance(v, bool) else (1, 0, str(v))


# ---- figures ---------------------------------------------------------------------------------

def acc_heatmap(rows: Sequence[dict[str, Any]], keys: tuple[str, str]):
    import plotly.graph_objects as go

    xs, ys, z, n = mean_acc_grid(rows, keys)
    text = [[("-" if v is None else f"{v:.4f}<br>n={c}") for v, c in zip(zr, nr)]
            for zr, nr in zip(z, n)]
    fig = go.Figure(go.Heatmap(
        z=z, x=[str(x) for x in xs], y=[str(y) for y in ys], text=text, texttemplate="%{text}",
        colorscale="Viridis", zmin=0, zmax=1, colorbar=dict(title="mean acc"),
        hovertemplate=f"{keys[0]} %{{x}}<br>{keys[1]} %{{y}}<br>mean acc %{{z:.4f}}<extra></extra>"))
    fig.update_xaxes(title_text=keys[0], type="category")
    fig.update_yaxes(title_text=keys[1], type="category")
    fig.update_layout(title_text=f"Mean validation accuracy over seeds: {keys[1]} by {keys[0]}",
                      height=max(320, 160 + 60 * len(ys)), template="plotly_white")
    return fig


def _strip(fig, grouped, value, go, row=None, col=None, seed: int = 0):
    """Points per group at x = group index (+ seeded jitter), coloured by reaching the threshold."""
    rng = np.random.default_rng(seed)
    where = dict(row=row, col=col) if row is not None else {}
    for reached, name, color in ((True, "reached threshold", REACHED_COLOR),
                                 (False, "did not", MISSED_COLOR)):
        xs, ys, hover = [], [], []
        for i, (label, members) in enumerate(grouped):
            for r in members:
                v = value(r)
                if v is None or (r["steps_to_threshold"] is not None) != reached:
                    continue
                xs.append(round(i + float(rng.uniform(-0.22, 0.22)), 3))
                ys.append(v)
                hover.append(f"{label}, seed {r['seed']}: acc "
                             + ("-" if r["acc"] is None else f"{r['acc']:.4f}")
                             + f", steps {r['steps']}, to threshold {r['steps_to_threshold']}")
        fig.add_trace(go.Scatter(x=xs, y=ys, mode="markers", name=name, legendgroup=name,
                                 showlegend=row in (None, 1) and col in (None, 1),
                                 marker=dict(color=color, size=8, opacity=0.75,
                                             line=dict(color="#333", width=0.5)),
                                 hovertext=hover, hoverinfo="text"), **where)


def seed_strip(rows: Sequence[dict[str, Any]]):
    import plotly.graph_objects as go

    grouped = groups(rows)
    fig = go.Figure()
    _strip(fig, grouped, lambda r: r["acc"] if r["status"] == "done" else None, go)
    for t in sorted({r["config"].train.early_stop_acc for r in rows}):
        fig.add_hline(y=t, line_dash="dot", line_color="#7f7f7f",
                      annotation_text=f"threshold {t:g}", annotation_position="bottom right")
    fig.update_xaxes(tickvals=list(range(len(grouped))), ticktext=[g for g, _ in grouped],
                     range=[-0.6, len(grouped) - 0.4], title_text="entry")
    fig.update_yaxes(title_text="validation accuracy")
    fig.update_layout(title_text="Accuracy of every seed", height=440, template="plotly_white")
    return fig


def steps_figure(rows: Sequence[dict[str, Any]]):
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    grouped = groups(rows)
    fig = make_subplots(rows=1, cols=2, column_widths=[0.62, 0.38], horizontal_spacing=0.1,
                        subplot_titles=("Steps to threshold, per seed",
                                        "Fraction of seeds at threshold"))
    _strip(fig, [(g, [r for r in m if r["steps_to_threshold"] is not None]) for g, m in grouped],
           lambda r: r["steps_to_threshold"], go, row=1, col=1)
    fracs, hover = [], []
    for label, members in grouped:
        finished = [r for r in members if r["status"] in ("done", "failed")]
        reached = [r for r in finished if r["steps_to_threshold"] is not None]
        fracs.append(len(reached) / len(finished) if finished else None)
        med = statistics.median([r["steps_to_threshold"] for r in reached]) if reached else None
        hover.append(f"{label}: {len(reached)} of {len(finished)} finished runs"
                     + (f", median {med:g} steps" if med is not None else ""))
    fig.add_trace(go.Bar(x=list(range(len(grouped))), y=fracs, marker_color=ACC_COLOR,
                         hovertext=hover, hoverinfo="text", showlegend=False,
                         text=[("-" if f is None else f"{f:.2f}") for f in fracs],
                         textposition="outside"), row=1, col=2)
    for col in (1, 2):
        fig.update_xaxes(tickvals=list(range(len(grouped))), ticktext=[g for g, _ in grouped],
                         range=[-0.6, len(grouped) - 0.4], row=1, col=col)
    fig.update_yaxes(title_text="steps", rangemode="tozero", row=1, col=1)
    fig.update_yaxes(title_text="fraction", range=[0, 1.15], row=1, col=2)
    fig.update_layout(title_text="Steps to threshold", height=440, template="plotly_white")
    return fig


# ---- the page --------------------------------------------------------------------------------

def _table(t, bad_status: bool = False) -> Table:
    fmts = {c: ".5f" for c in ("val_acc", "val_seq_acc", "acc_mean", "acc_std")}
    fmts["frac_threshold"] = ".3f"
    bad = [r.get("status") == "failed" for r in t.rows] if bad_status else []
    return Table(list(t.columns), list(t.rows), caption=t.caption, bad=bad, formats=fmts)


@dataclass(frozen=True)
class SweepContext:
    """What a sweep section builder draws from: every entry, the distinct runs, the two axes."""

    rows: Sequence[dict[str, Any]]
    keys: tuple[str, str]
    sweep_dir: Path

    @property
    def runs(self) -> list[dict[str, Any]]:
        return distinct_runs(self.rows)

    @property
    def done(self) -> bool:
        """Whether any run finished with an accuracy (else there is nothing to draw yet)."""
        return any(r["status"] == "done" and r["acc"] is not None for r in self.runs)


NOT_YET = "No finished runs yet."


def results_section(ctx: SweepContext) -> Section:
    from ..sweep.results import runs_table, summary_table

    rt = runs_table(ctx.rows)
    return Section(
        "results", "Results",
        "Every entry of the grid with its settings and final validation accuracy (the "
        "notebook's table), then the same aggregated over seeds: mean and standard deviation of "
        "the accuracy, the fraction of seeds that reached the early-stop accuracy and their "
        "median steps to it.",
        numbers=" ".join(rt.notes),
        tables=[_table(rt, bad_status=True), _table(summary_table(ctx.rows))])


def heatmap_section(ctx: SweepContext) -> Section:
    x, y = ctx.keys
    return Section(
        "heatmap", "Accuracy over two axes",
        f"Mean validation accuracy of the finished runs for each value of {x} (columns) "
        f"and {y} (rows), over seeds and every other setting; n is the number of runs.",
        numbers="" if ctx.done else NOT_YET,
        figures=[Figure("acc_heatmap", acc_heatmap(ctx.rows, ctx.keys))] if ctx.done else [])


def seeds_section(ctx: SweepContext) -> Section:
    return Section(
        "seeds", "Seeds",
        "The final validation accuracy of every seed of every entry, coloured by whether the run "
        "reached the early-stop accuracy: how much the outcome depends on the seed.",
        numbers="" if ctx.done else NOT_YET,
        figures=[Figure("seed_strip", seed_strip(ctx.rows))] if ctx.done else [])


def steps_section(ctx: SweepContext) -> Section:
    s = Section(
        "steps", "Steps to threshold",
        "The first evaluation step at which each run reached the early-stop accuracy, and the "
        "fraction of each entry's finished seeds that reached it.", numbers=NOT_YET)
    runs = ctx.runs
    if any(r["status"] in ("done", "failed") for r in runs):
        reached = sum(r["steps_to_threshold"] is not None for r in runs)
        s.numbers = f"{reached} of {len(runs)} runs reached it."
        s.figures.append(Figure("steps_to_threshold", steps_figure(ctx.rows)))
    return s


def frontier_section_of(ctx: SweepContext) -> Section | None:
    """A `listcopy frontier` directory's phase diagram; None for any other sweep."""
    from .frontier import frontier_section, load_frontier

    frontier = load_frontier(ctx.sweep_dir)
    return None if frontier is None else frontier_section(frontier)


SWEEP_SECTIONS: tuple[Callable[[SweepContext], Section | None], ...] = (
    results_section, heatmap_section, seeds_section, steps_section, frontier_section_of)


def build_sweep_page(rows: Sequence[dict[str, Any]], keys: tuple[str, str], sweep_dir: Path,
                     sections: Sequence[Callable[[SweepContext], Section | None]] = SWEEP_SECTIONS
                     ) -> Page:
    """The sweep's page: a section from each builder of ``sections`` that has one to give."""
    ctx = SweepContext(rows, keys, sweep_dir)
    runs = ctx.runs
    counts = {s: sum(r["status"] == s for r in runs) for s in ("done", "failed", "running", "pending")}
    page = Page(title=f"listcopy sweep report: {sweep_dir.name or sweep_dir}",
                subtitle=(f"{len(rows)} entries, {len(runs)} distinct runs: "
                          + ", ".join(f"{n} {s}" for s, n in counts.items() if n)
                          + f"; from {sweep_dir}"),
                footer="Read from the sweep's database (sweep.db); works offline (plotly.js embedded).")
    for build in sections:
        section = build(ctx)
        if section is not None:
            page.add(section)
    return page
