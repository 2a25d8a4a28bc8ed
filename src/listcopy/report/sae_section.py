"""The report's SAE section: the builder of the ``sae`` row of ``model_page.MODEL_SECTIONS``.

``listcopy report MODEL --sae DIR`` (``model_report(..., sae=DIR)``) runs ``analyze_sae`` on the
model and puts its result under ``"sae"``; this fills the section's numbers, figures
(``sae_figures``) and the table of the latents that swap outputs most from that JSON. A study that
did not apply (the SAE does not read the residual stream, no swapped pairs) shows its reason.
"""

from __future__ import annotations

from typing import Any

from . import sae_figures as S
from .html import Figure, Section, Table


def sae_section(r: dict[str, Any], ctx: Any, s: Section) -> None:
    site = r.get("site") or {}
    s.what = s.what.format(sae=r.get("sae", "?"), source=r.get("source", "?"),
                           hook=site.get("hook", "?"),
                           position=site.get("analysis_position", "?"))
    from ..sae.analyze import format_summary

    s.numbers = format_summary(r).replace("\n", ". ") + "."
    s.figures.append(Figure("sae_accuracy", S.sae_accuracy_bars(r["metrics"])))
    if "skipped" not in r["alignment"]:
        s.figures.append(Figure("sae_alignment", S.sae_alignment_bars(r["alignment"])))
    if r["attention"]["latents"]:
        s.figures.append(Figure("sae_alpha", S.sae_alpha_heatmap(r["attention"])))
    if r["swaps"].get("n_pairs"):
        s.figures.append(Figure("sae_swaps", S.sae_swap_bars(r["swaps"])))
    if any(row["by_factor"] for row in r["steering"]["latents"]):
        s.figures.append(Figure("sae_steering", S.sae_steering_heatmap(r["steering"])))
    s.tables.append(metrics_table(r["metrics"]))
    s.tables.append(steering_table(r["steering"]))


def metrics_table(m: dict[str, Any]) -> Table:
    keys = ("l0", "dead", "alive", "d_sae", "mse", "explained_variance", "baseline_acc",
            "patched_acc", "drop", "baseline_seq_acc", "patched_seq_acc", "n_lists")
    return Table(["metric", "value"], [{"metric": k, "value": m.get(k)} for k in keys],
                 caption=f"Reconstruction and patched accuracy ({m.get('split', 'val')} lists)")


def steering_table(st: dict[str, Any]) -> Table:
    rows = [{"factor": f"x{f}", **row} for f, top in st["top_swap"].items() if f != "1"
            for row in top[:3]]
    return Table(["factor", "latent", "swap", "stay", "break"], rows,
                 caption="The latents that swap outputs most, per factor (fractions of the lists "
                         "each fires on)",
                 formats={"swap": ".3f", "stay": ".3f", "break": ".3f"})
