"""The page of ``listcopy paper``: per model, the numbers of sections 4.1-4.3 beside the paper's
and Figures 1-4 (and the error scatter, the positional SVC's points); Table 4 beside the paper's
when a sweep of its grid is given.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from ..report import paper_figures as P
from ..report.html import Figure, Page, Section, Table
from .settings import MODELS, PAPER_NUMBERS, RESEARCH_VARIANT, TABLE4


def _get(r: dict[str, Any], *keys: str) -> Any:
    """``r[k0][k1]...``, or None where a key is missing or a part did not apply (a string)."""
    for k in keys:
        if not isinstance(r, dict) or k not in r:
            return None
        r = r[k]
    return r


# what listcopy measured under each of the paper's keys
MEASURED: dict[str, Callable[[dict[str, Any]], Any]] = {
    "acc": lambda r: _get(r, "metrics", "acc"),
    "moderation_o2_wrong": lambda r: _get(r, "moderation", "errors", "o2", "wrong"),
    "moderation_eq_d1": lambda r: _get(r, "moderation", "errors", "o2", "eq_d1"),
    "alpha_o2_before": lambda r: _get(r, "order_by_scale", "alpha_intervention", "delta_logits",
                                      "acc_before"),
    "alpha_o2_after": lambda r: _get(r, "order_by_scale", "alpha_intervention", "delta_logits",
                                     "acc_after"),
    "mean_attention_acc": lambda r: _get(r, "mean_attention", "acc"),
    "svc_accuracy": lambda r: _get(r, "order_by_scale", "positional_svc", "accuracy"),
}


def numbers_table(name: str, r: dict[str, Any]) -> Table:
    rows = [{"quantity": what, "paper": paper, "listcopy": MEASURED[key](r)}
            for key, (paper, what) in PAPER_NUMBERS[name].items()]
    return Table(["quantity", "paper", "listcopy"], rows,
                 caption=f"{name}: the paper's numbers and listcopy's on this model",
                 formats={"paper": ".4f", "listcopy": ".4f"})


def model_section(name: str, r: dict[str, Any]) -> Section:
    n_digits = r["config"]["task"]["n_digits"]
    s = Section(name, f"The {name[0]}-layer model",
                f"{r['name']}: validation accuracy {r['metrics']['acc']:.4f}, seq_acc "
                f"{r['metrics']['seq_acc']:.4f}.")
    s.tables.append(numbers_table(name, r))
    crit = r["critical_edges"]
    s.figures.append(Figure(f"{name}_figure1", P.circuit_graph(crit, n_digits)))
    obs = r["order_by_scale"]
    if isinstance(obs.get("delta_logits"), dict):
        for pair in obs["delta_logits"]["pairs"]:
            s.figures.append(Figure(f"{name}_figure2_{pair['first']}_{pair['second']}",
                                    P.delta_logit_bars(pair)))
    att = obs["attention"]
    s.figures.append(Figure(f"{name}_figure3", P.attention_histograms(att)))
    if len(att["alpha_keys"]) >= 2:
        s.figures.append(Figure(f"{name}_figure4", P.alpha_scatter(att)))
        s.figures.append(Figure(f"{name}_errors", P.error_scatter(att)))
    if isinstance(obs.get("positional_svc"), dict):
        s.figures.append(Figure(f"{name}_svc", P.svc_points(obs["positional_svc"])))
    return s


def table4_rows(runs) -> list[dict[str, Any]]:
    """Sweep rows (``sweep.load_rows``) -> Table 4's rows: the mean accuracy of the done 2-layer
    runs per (d_model, LN, bias, learned W_V, learned W_O), beside the paper's; the worst and best
    run, and the fraction of runs above 0.9 (the paper's 0.918 for d_model 64 is a mean of three)."""
    groups: dict[tuple, list[float]] = {}
    for row in runs:
        m = row["config"].model
        if row.get("status") != "done" or row.get("acc") is None or m.n_layers != 2:
            continue
        key = (m.d_model, m.ln, m.use_bias, not m.freeze_wv, not m.freeze_wo)
        groups.setdefault(key, []).append(row["acc"])
    return [{"d_model": k[0], "LN": k[1], "bias": k[2], "W_V learned": k[3], "W_O learned": k[4],
             "paper": TABLE4.get(k), "listcopy": sum(v) / len(v), "min": min(v), "max": max(v),
             "above 0.9": sum(a > 0.9 for a in v) / len(v), "runs": len(v)}
            for k, v in sorted(groups.items(), key=lambda kv: (-kv[0][0], kv[0][1:]))]


TABLE4_FORMATS = {"paper": ".4f", "listcopy": ".4f", "min": ".4f", "max": ".4f",
                  "above 0.9": ".2f"}


def table4_section(grid: str | Path) -> Section:
    from ..sweep.results import load_rows

    rows = table4_rows(load_rows(grid))
    s = Section("table4", "Table 4: the grid", f"Mean validation accuracy of the 2-layer runs "
                f"of the sweep {grid}, beside the paper's (mean of three runs).")
    s.tables.append(Table(list(rows[0]) if rows else ["d_model"], rows, formats=TABLE4_FORMATS))
    return s


def table4_markdown(grid: str | Path) -> str:
    """Table 4 of the sweep ``grid`` as a markdown table, and how many of its runs it counts."""
    from ..sweep.results import load_rows, markdown

    runs = load_rows(grid)
    rows = table4_rows(runs)
    counted = sum(r["runs"] for r in rows)
    note = (f"{counted} finished 2-layer runs of {len(runs)} in {grid}; listcopy = their mean "
            f"validation accuracy per cell, paper = the paper's mean of three")
    if not rows:
        return note
    return markdown(list(rows[0]), rows, TABLE4_FORMATS) + "\n\n" + note


def errors_rows(grid: str | Path) -> list[dict[str, Any]]:
    """Per finished run of the sweep ``grid`` (by run directory): ``analyze --only errors`` in
    columns (per output position: right, another digit of the list, not in the list) and how the
    run ends (``analysis.errors.ending``)."""
    from ..analysis.errors import ending, output_errors
    from ..checkpoint import load
    from ..sweep.results import load_rows

    rows = []
    done = {r["run_dir"] for r in load_rows(grid) if r["status"] == "done" and r["run_dir"]}
    for run_dir in sorted(done):  # entries that share a run (the same config twice): once
        model, config = load(Path(grid) / run_dir)
        e = output_errors(model.eval(), config).to_dict()
        row: dict[str, Any] = {"run": Path(run_dir).name.rsplit("-", 1)[0],
                               "acc": e["metrics"]["acc"], "seq_acc": e["metrics"]["seq_acc"]}
        for o, p in e["positions"].items():
            row.update({f"{o} right": p["right"], f"{o} other digit of the list": p["in_list"],
                        f"{o} not in the list": p["not_in_list"]})
        rows.append({**row, "right digits, any order": e["set_acc"], "ends": ending(e)})
    return rows


def errors_markdown(grid: str | Path) -> str:
    """``errors_rows`` as a markdown table, and how many runs end each way."""
    from collections import Counter

    from ..analysis.errors import ENDINGS
    from ..sweep.results import markdown

    rows = errors_rows(grid)
    if not rows:
        return f"no finished runs in {grid}"
    counts = Counter(r["ends"] for r in rows)
    columns = list(dict.fromkeys(c for r in rows for c in r))  # lists of several lengths: all
    columns.append(columns.pop(columns.index("ends")))
    formats = {c: ".4f" for c in columns if c not in ("run", "ends")}
    return (markdown(columns, rows, formats) + f"\n\n{len(rows)} finished runs: "
            + ", ".join(f"{counts[k]} {k}" for k in ENDINGS if counts[k]))


def paper_page(results: dict[str, dict[str, Any]], grid: str | Path | None = None) -> Page:
    variant = (f"the paper's variant ({', '.join(RESEARCH_VARIANT)}: MASK at the outputs' input "
               "positions, and in layer 0 the outputs receive nothing)")
    page = Page(title="Order by Scale, reproduced with listcopy",
                subtitle=f"Models: {variant}. Figures 1-4 and the numbers of sections 4.1-4.3.",
                footer="listcopy paper; works offline (plotly.js embedded).")
    for name in MODELS:
        if name in results:
            page.add(model_section(name, results[name]))
    if grid is not None:
        page.add(table4_section(grid))
    return page
