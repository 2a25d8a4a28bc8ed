"""The page of one model's report: an overview, then one section per analysis in the result.

    page = build_page(result, config, history, run)     # result: what ``analyze`` returns

The sections come from a table, ``MODEL_SECTIONS``: the analysis's key in the result -> a row
holding the section's title, what it measures and a small builder that fills in the section's
numbers, figures and tables from that analysis's JSON. The page is a loop over the table, in its
order, drawing the sections whose analysis ran; a new analysis gets its section by one builder
and one row.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

from ..config import Config
from . import figures as F
from . import paper_sections
from .html import Figure, Page, Section, Table
from .sae_section import sae_section


@dataclass(frozen=True)
class PageContext:
    """What a section builder may use besides its own analysis's result."""

    config: Config
    base: dict[str, Any]  # the clean model's validation metrics
    history: Sequence[dict[str, Any]] = ()
    run: dict[str, Any] = field(default_factory=dict)

    @property
    def n_digits(self) -> int:
        return self.config.task.n_digits

    @property
    def mask_token(self) -> bool:
        return self.config.task.mask_token

    @property
    def labels(self) -> list[str]:
        from ..task import token_labels

        return token_labels(self.config.task.list_len)


def metrics_text(m: dict[str, Any], base: dict[str, Any] | None = None) -> str:
    """``acc 0.9000 (-0.0500), seq_acc ..., loss ...``: changes against ``base`` if given; a
    missing value (a non-finite loss) as ``-``."""
    def one(key: str) -> str:
        if m.get(key) is None:
            return f"{key} -"
        s = f"{key} {m[key]:.4f}"
        if base is not None and base.get(key) is not None:
            s += f" ({m[key] - base[key]:+.4f})"
        return s
    return ", ".join(one(k) for k in ("acc", "seq_acc", "loss"))


# ---- the builders, one per section --------------------------------------------------------------------

@dataclass(frozen=True)
class SectionRow:
    """One row of the page's table: a section's title, what it measures (``{field}``
    placeholders are filled in by the builder) and the builder that fills in its numbers,
    figures and tables from the analysis's JSON."""

    title: str
    what: str
    build: Callable[[Any, PageContext, Section], None]  # (analysis JSON, context, section)

    def section(self, section_id: str, value: Any, ctx: PageContext) -> Section:
        s = Section(section_id, self.title, self.what)
        self.build(value, ctx, s)
        return s


def overview(result: dict[str, Any], ctx: PageContext, s: Section) -> None:
    s.numbers = "No training history (a seed checkpoint or a model passed in)."
    s.tables.append(config_table(ctx.config, trained_here=bool(ctx.run)))
    if "parameters" in result:
        s.tables.append(parameter_table(result["parameters"]))
    if ctx.run:
        s.tables.append(run_table(ctx.run))
    if ctx.history:
        s.figures.append(Figure("training_curve", F.training_curve(
            ctx.history, ctx.config.train.early_stop_acc)))
        s.numbers = f"{len(ctx.history)} evaluations, last at step {ctx.history[-1].get('step')}."


def config_table(config: Config, trained_here: bool = True) -> Table:
    """The config's settings; a checkpoint file's (``trained_here`` False) without the train
    section, which such a file does not record (it would show listcopy's defaults)."""
    rows = [{"setting": f"{section}.{k}", "value": v}
            for section, values in config.to_dict().items() for k, v in values.items()
            if trained_here or section != "train"]
    caption = f"Config ({config.name})"
    if not trained_here:
        caption += "; a checkpoint file records no training settings"
    return Table(["setting", "value"], rows, caption=caption)


def parameter_table(params: dict[str, Any]) -> Table:
    rows = [{"name": r["name"], "shape": tuple(r["shape"]), "trainable": r["trainable"],
             "numel": r["numel"]} for r in params["rows"]]
    return Table(["name", "shape", "trainable", "numel"], rows,
                 caption=f"Parameters: {params['total']} in all, {params['trainable']} trainable",
                 headers={"numel": "count"})


def run_table(run: dict[str, Any]) -> Table:
    keys = ("step", "status", "stop_reason", "steps_to_threshold", "wall_time_s")
    rows = [{"field": k, "value": run.get(k)} for k in keys if k in run]
    return Table(["field", "value"], rows, caption="Training run")


def errors(e: dict[str, Any], ctx: PageContext, s: Section) -> None:
    s.numbers = (f"The right digits in some order: {e['set_acc']:.4f} of the lists (in the right "
                 f"order: {e['metrics']['seq_acc']:.4f}).")
    rows = [{"output": name, "right": p["right"], "in_list": p["in_list"],
             "not_in_list": p["not_in_list"], "eq_prev_pred": p["eq_prev_pred"]}
            for name, p in e["positions"].items()]
    s.tables.append(Table(["output", "right", "in_list", "not_in_list", "eq_prev_pred"], rows,
                          caption="Predictions at each output position",
                          headers={"in_list": "another digit of the list",
                                   "not_in_list": "a digit not in the list",
                                   "eq_prev_pred": "of the wrong: the previous output's"},
                          formats={k: ".4f" for k in ("right", "in_list", "not_in_list",
                                                       "eq_prev_pred")}))


def attention(a: dict[str, Any], ctx: PageContext, s: Section) -> None:
    toks = " ".join(F.token_text(t, ctx.n_digits, ctx.mask_token) for t in a["example_tokens"])
    s.what = s.what.format(example=a["example_index"], tokens=toks, n_val=ctx.base["n_val"])
    leaks = ", ".join(f"L{i} {x:.1e}" for i, x in enumerate(a["max_leak"]))
    const = ", ".join(f"L{i} {'yes' if c else 'no'}" for i, c in enumerate(a["patterns_constant"]))
    s.numbers = (f"Largest attention from an output position onto the input digits: {leaks} "
                 f"({'within' if a['leak_ok'] else 'ABOVE'} the seed's limit "
                 f"{a['leak_eps']:g}). Patterns identical for every input: {const}.")
    s.figures.append(Figure("attention_example", F.attention_heatmaps(
        a["example"], ctx.labels, f"Attention Patterns for validation example {a['example_index']}",
        "Attention Pattern")))
    s.figures.append(Figure("attention_mean", F.attention_heatmaps(
        a["mean"], ctx.labels, "Average Attention Patterns Across Validation Set",
        "Average Attention")))


def mean_attention(ma: dict[str, Any], ctx: PageContext, s: Section) -> None:
    s.numbers = f"Clean: {metrics_text(ctx.base)}. Mean attention: {metrics_text(ma, ctx.base)}."
    s.figures.append(Figure("mean_attention", F.mean_attention_bars(ma, ctx.base)))


def pos_ablation(pos: dict[str, Any], ctx: PageContext, s: Section) -> None:
    from ..analysis.common import stage_label

    hook, worst = min(pos.items(), key=lambda kv: kv[1]["acc"])
    s.numbers = f"Largest drop: after {stage_label(hook)}, {metrics_text(worst, ctx.base)}."
    s.figures.append(Figure("pos_ablation", F.pos_ablation_bars(pos, ctx.base)))


def skip_ablation(sk: dict[str, Any], ctx: PageContext, s: Section) -> None:
    zero, mean = (metrics_text(sk[kind]["all"], ctx.base) for kind in ("zero", "mean"))
    s.numbers = f"All layers, zero: {zero}; all layers, mean: {mean}."
    s.figures.append(Figure("skip_ablation", F.skip_ablation_bars(sk, ctx.base)))


def logit_lens(lens: dict[str, Any], ctx: PageContext, s: Section) -> None:
    s.numbers = "Decoded accuracy on output positions: " + ", ".join(
        f"{st} {acc:.4f}" for st, acc in zip(lens["stage_labels"], lens["val_acc"])) + "."
    s.figures.append(Figure("attention_flow", F.attention_flow(lens, ctx.n_digits, mask_token=ctx.mask_token)))
    s.figures.append(Figure("logit_lens_accuracy", F.logit_lens_accuracy(lens)))


def edges(e: dict[str, Any], ctx: PageContext, s: Section) -> None:
    s.numbers = (f"{len(e['removable'])} of {len(e['edges'])} edges removable "
                 f"(|\u0394 acc| < {e['tolerance']:g}); all of them removed at once: "
                 f"{metrics_text(e['combined'], ctx.base)}.")
    s.figures.append(Figure("edges", F.edge_bars(e)))
    s.tables.append(F.edge_table(e))


def sep_attention(sep: dict[str, Any], ctx: PageContext, s: Section) -> None:
    s.what = s.what.format(layer=sep["layer"])
    s.numbers = f"{sum(sep['correct'])} of {len(sep['correct'])} lists right."
    s.figures.append(Figure("sep_attention", F.sep_scatter(sep, seed=0)))


def geometry(g: dict[str, Any], ctx: PageContext, s: Section) -> None:
    nums = [f"{name}: PC1+PC2 explain {_pct2(g['pca'][name])}, nearest-neighbour angle "
            f"{ang['nearest_mean']:.1f} \u00b1 {ang['nearest_std']:.1f}\u00b0"
            for name, ang in g["angles"].items() if name in ("W_E", "W_U")]
    umap = {dim: any((c or {}).get(dim) is not None for c in (g["umap"] or {}).values())
            for dim in ("2d", "3d")}
    dims = min(len(g["pca"][n]["coords"][0]) for n in ("W_E", "W_U") if n in g["pca"])
    s.numbers = "; ".join(nums) + (
        "." if all(umap.values()) else "; UMAP skipped." if g["umap"] is None
        else "; no UMAP (it needs at least 4 digits).") + (
        "" if dims >= 3 else f" No 3-D PCA: the digit vectors have {dims} principal "
        f"component{'s' if dims != 1 else ''} (d_model {ctx.config.model.d_model}, "
        f"{ctx.n_digits} digits).")
    s.figures.append(Figure("pca_2d", F.pca_2d(g, ctx.labels)))
    if dims >= 3:
        s.figures.append(Figure("pca_3d", F.pca_3d(g)))
    if umap["2d"]:
        s.figures.append(Figure("umap_2d", F.umap_2d(g)))
    if umap["3d"]:
        s.figures.append(Figure("umap_3d", F.umap_3d(g)))
    s.figures.append(Figure("angles", F.angle_heatmaps(g)))


def _pct2(p: dict[str, Any]) -> str:
    r = [x or 0.0 for x in p["explained_variance_ratio"][:2]]
    return f"{100 * sum(r):.1f}%"


def probes(p: dict[str, Any], ctx: PageContext, s: Section) -> None:
    s.what = s.what.format(position=p["position"], n_train=p["n_train"], n_val=p["n_val"])
    last = [r for r in p["rows"] if r["stage_label"] == p["rows"][-1]["stage_label"]]
    s.numbers = "After the last layer: " + "; ".join(
        f"{r['target']} acc {r['logistic']['acc']:.3f}, AUC "
        + (f"{r['logistic']['auc']:.3f}" if r["logistic"]["auc"] is not None else "-")
        for r in last if "logistic" in r) + "."
    s.figures.append(Figure("probes", F.probe_lines(p, ctx.n_digits)))


# ---- the table and the page ----------------------------------------------------------------

OVERVIEW = SectionRow(
    "Overview",
    "The model's configuration, its parameters and, for a listcopy run, the training curve "
    "from its metrics history; accuracies are per output token (acc) and per whole list "
    "(seq_acc) on the validation split.",
    overview)

# The sections after the overview, in page order: the analysis's key in the result (the
# section's id) -> its title, what it measures and its builder.
MODEL_SECTIONS: dict[str, SectionRow] = {
    "errors": SectionRow(
        "Where the errors come from",
        "Each output's prediction on the validation lists: the right digit, another digit of "
        "its own list (the order wrong), or a digit the list does not hold.",
        errors),
    "attention": SectionRow(
        "Attention patterns",
        "Attention weights of every layer, query positions as rows and key positions as columns, "
        "for validation example {example} [{tokens}] and averaged over the {n_val} validation "
        "lists.",
        attention),
    "mean_attention": SectionRow(
        "Mean-attention ablation",
        "Every layer's attention scores replaced by the log of its mean validation pattern, so "
        "each input is attended with the average pattern: how much the model relies on attention "
        "that depends on the input.",
        mean_attention),
    "pos_ablation": SectionRow(
        "Positional-embedding ablation",
        "W_pos subtracted from the residual stream at every position but SEP, at one point at a "
        "time (after the embedding, after each layer): where position information is still "
        "needed.",
        pos_ablation),
    "skip_ablation": SectionRow(
        "Skip-connection ablation",
        "Each layer's skip connection removed (zero: the layer passes on only its attention "
        "output) or mean-ablated (resid_pre replaced by its mean over the validation set and "
        "positions), one layer at a time and at all layers at once.",
        skip_ablation),
    "logit_lens": SectionRow(
        "Logit lens and attention flow",
        "The residual stream decoded by the unembedding after the embedding and after each layer "
        "(node label: the top token, colour: the target's probability), with the attention "
        "weights that move information between stages, for one validation example.",
        logit_lens),
    "edges": SectionRow(
        "Edge ablation",
        "One attention edge (layer, query, key) zeroed at a time in the attention pattern, "
        "without renormalising, for every edge the mask allows: the change in validation "
        "accuracy, sorted by effect.",
        edges),
    "sep_attention": SectionRow(
        "SEP attention",
        "Layer-{layer} attention scores (before the softmax) from SEP to each input digit for "
        "every validation list, coloured by whether the model copies the whole list right.",
        sep_attention),
    "geometry": SectionRow(
        "Embedding geometry",
        "PCA and UMAP of the digit embeddings (rows of W_E) and unembeddings (columns of W_U) in "
        "2D and 3D, PCA of the positional embeddings, and the angles between digit vectors.",
        geometry),
    "probes": SectionRow(
        "Linear probes",
        "Multinomial logistic regression (solid) and LDA (dashed) predicting each input digit "
        "from the residual stream at {position} after the embedding and after each layer, fitted "
        "on {n_train} training lists and scored on {n_val} validation lists.",
        probes),
    "order_by_scale": SectionRow(
        "Order by scale",
        "The analyses of the paper \"Order by Scale\" (sections 4.2-4.3, appendix B): the logits "
        "rebuilt as a sum over attention paths, the gap between consecutive outputs split into "
        "path terms (equation 6, Figure 2), SEP's weights set by hand, lists against their "
        "swapped partners (equation 5), the output residuals separated on W_pos, and the "
        "attention weights of right and wrong lists (Figures 3 and 4).",
        paper_sections.order_by_scale),
    "critical_edges": SectionRow(
        "Critical edges and the minimal circuit",
        "Each attention edge the model's mask allows ablated alone (touched rows renormalised "
        "unless stated): critical when accuracy drops by more than the tolerance; the circuit "
        "of critical edges drawn on one validation example with its logit lens (Figure 1).",
        paper_sections.critical_edges),
    "sae": SectionRow(
        "Sparse autoencoder",
        "The SAE {sae} ({source}) at {hook}, studied at {position} on the validation lists as "
        "the research line does: its reconstruction spliced into the model (accuracy per output "
        "position), each alive latent's decoder direction against every E_d + P_i, its "
        "activation against SEP's attention weights alpha, latents shared by swapped pairs, and "
        "one latent scaled at a time (outputs that stay, swap or break).",
        sae_section),
}

ON_REQUEST = ("sae",)  # drawn when asked for (listcopy report --sae), not by listcopy analyze
# every section of an analysis result, in page order
SECTIONS = ("overview", *(k for k in MODEL_SECTIONS if k not in ON_REQUEST))


def build_page(result: dict[str, Any], config: Config, history: Sequence[dict[str, Any]] = (),
               run: dict[str, Any] | None = None,
               sections: Mapping[str, SectionRow] = MODEL_SECTIONS) -> Page:
    """The report page of an analysis result (the dict ``analyze`` returns): the overview, then
    a section for each key of ``sections`` in ``result``, in the table's order."""
    ctx = PageContext(config, result["metrics"], history, run or {})
    page = Page(title=f"listcopy report: {config.name}", subtitle=subtitle(ctx), footer=footer())
    page.add(OVERVIEW.section("overview", result, ctx))
    for key, row in sections.items():
        if key in result:
            page.add(row.section(key, result[key], ctx))
    return page


def subtitle(ctx: PageContext) -> str:
    m, task, base = ctx.config.model, ctx.config.task, ctx.base
    return (f"{m.n_layers} layer{'s' if m.n_layers > 1 else ''}, {m.n_heads} head"
            f"{'s' if m.n_heads > 1 else ''}, d_model "
            f"{m.d_model}, {task.n_digits} digits, lists of {task.list_len} ({task.kind}); "
            f"validation {metrics_text(base)} on {base['n_val']} lists")


def footer() -> str:
    from importlib import metadata

    def v(name: str) -> str:
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            return "?"

    return f"listcopy {v('listcopy')}, plotly {v('plotly')}; works offline (plotly.js embedded)."
