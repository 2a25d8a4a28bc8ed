"""The report's sections for the paper "Order by Scale": builders of the ``order_by_scale`` and
``critical_edges`` rows of ``model_page.MODEL_SECTIONS`` (each fills a section's numbers, figures
and tables from its analysis's JSON; a part that does not apply shows its one-line reason).
"""

from __future__ import annotations

from typing import Any

from . import paper_figures as P
from .html import Figure, Section, Table


def _na(name: str, why: str) -> str:
    return f"{name}: does not apply ({why})."


def _numbers(r: dict[str, Any]) -> list[str]:
    out = []
    rec = r.get("reconstruction")
    if isinstance(rec, dict):
        l2 = ", ".join(f"{lab} {x:.1e}" for lab, x in zip(rec["labels"], rec["mean_l2"]))
        out.append(f"Logits rebuilt from the attention paths: mean L2 to the model's {l2}; "
                   f"accuracy {rec['acc']:.4f} (model {rec['model_acc']:.4f}).")
    elif rec is not None:
        out.append(_na("Path reconstruction", rec))
    ai = r.get("alpha_intervention")
    if isinstance(ai, dict):
        f = ai["delta_logits"]
        tail = (f" In delta l only, {f['position']} accuracy {f['acc_before']:.4f} \u2192 "
                f"{f['acc_after']:.4f}." if isinstance(f, dict) else "")
        out.append("Weights set: per-position accuracy "
                   + " ".join(f"{a:.4f}" for a in ai["before"]["per_position_acc"]) + " \u2192 "
                   + " ".join(f"{a:.4f}" for a in ai["after"]["per_position_acc"]) + "." + tail)
    sp = r.get("swapped_pairs")
    if isinstance(sp, dict):
        auc = sp["errors_by_gap"]["auc_small_gap_error"]
        out.append(f"Swapped pairs: the larger SEP weight stays with its position in "
                   f"{100 * sp['position_order_kept']:.1f}% of {sp['n_pairs']} pairs; AUC of a "
                   f"small alpha gap for an error: " + ("-" if auc is None else f"{auc:.3f}") + ".")
    elif sp is not None:
        out.append(_na("Swapped pairs", sp))
    svc = r.get("positional_svc")
    if isinstance(svc, dict):
        from ..analysis.order_scale import svc_margin_text

        out.append(f"Positional SVC: accuracy {svc['accuracy']:.4f}, {svc_margin_text(svc)}.")
    elif svc is not None:
        out.append(_na("Positional SVC", svc))
    return out


def order_by_scale(r: dict[str, Any], ctx: Any, s: Section) -> None:
    s.numbers = " ".join(_numbers(r))
    att = r.get("attention")
    if isinstance(att, dict):
        s.figures.append(Figure("obs_attention_histograms", P.attention_histograms(att)))
        if len(att["alpha_keys"]) >= 2:
            s.figures.append(Figure("obs_alpha_scatter", P.alpha_scatter(att)))
            s.figures.append(Figure("obs_error_scatter", P.error_scatter(att)))
    dl = r.get("delta_logits")
    if isinstance(dl, dict):
        for pair in dl["pairs"]:
            s.figures.append(Figure(f"obs_delta_logits_{pair['first']}_{pair['second']}",
                                    P.delta_logit_bars(pair)))
        s.tables.append(delta_table(dl))
    elif dl is not None:
        s.numbers += " " + _na("Delta-logit decomposition", dl)
    ai = r.get("alpha_intervention")
    if isinstance(ai, dict):
        s.figures.append(Figure("obs_intervention", P.intervention_bars(
            ai, ctx.labels[ctx.config.task.list_len + 1:])))
    if isinstance(r.get("swapped_pairs"), dict):
        s.figures.append(Figure("obs_swapped_pairs", P.swapped_histograms(r["swapped_pairs"])))
    if isinstance(r.get("positional_svc"), dict):
        s.figures.append(Figure("obs_positional_svc", P.svc_points(r["positional_svc"])))


def delta_table(dl: dict[str, Any]) -> Table:
    rows = [{"pair": f"{p['first']} \u2192 {p['second']}", "term": t["label"],
             "coefficient": t["coefficient"], "individual": t["individual"],
             "cumulative": t["cumulative"]}
            for p in dl["pairs"] for t in [{"label": "base", "coefficient": None,
                                            "individual": p["base"], "cumulative": p["base"]},
                                           *p["terms"]]]
    return Table(["pair", "term", "coefficient", "individual", "cumulative"], rows,
                 caption="Delta-logit terms: mean path coefficient and mean contribution to the "
                         "gap between the two positions' targets",
                 formats={"coefficient": "+.4f", "individual": "+.4f", "cumulative": "+.4f"})


def critical_edges(c: dict[str, Any], ctx: Any, s: Section) -> None:
    labels = c["labels"]
    s.numbers = (f"{len(c['critical'])} critical of {len(c['critical']) + len(c['non_critical'])} "
                 f"edges (accuracy drop > {c['tolerance']:g} when ablated alone, rows "
                 f"{'renormalised' if c['renorm'] else 'not renormalised'}); all non-critical "
                 f"edges ablated at once: accuracy {c['acc_without_non_critical']:.4f} (clean "
                 f"{c['base']['acc']:.4f}).")
    s.figures.append(Figure("critical_circuit", P.circuit_graph(c, ctx.n_digits)))
    rows = [{"layer": l, "edge": f"{labels[q]}<-{labels[k]}", "delta_acc": d, "critical": crit}
            for crit, key in ((True, "critical"), (False, "non_critical"))
            for l, q, k, d in c[key]]
    s.tables.append(Table(["layer", "edge", "delta_acc", "critical"], rows,
                          caption="Every edge the mask allows, ablated alone",
                          headers={"edge": "edge (query<-key)", "delta_acc": "\u0394 acc"},
                          bad=[r["critical"] for r in rows], formats={"delta_acc": "+.4f"}))
