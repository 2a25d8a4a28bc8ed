"""The report of one model: every analysis, drawn, on one offline HTML page.

    >>> from listcopy.report import model_report
    >>> model_report("runs/3layer_100dig_8d", "report.html", png_dir="figures")

``path_or_model`` is a run directory, a seed ``.pt`` file, or a model (with ``config=``). The page
has a header (config, parameter table, training curve from the run's metrics history) and one
section per analysis of ``listcopy.analysis.analyze``; ``analysis=`` draws a result computed before
(e.g. ``listcopy analyze --json``) instead of running the analyses again.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

from ..config import Config, ConfigError
from . import figures as F
from .html import Figure, Page, Section, Table

SECTIONS = ("overview", "attention", "mean_attention", "pos_ablation", "skip_ablation",
            "logit_lens", "edges", "sep_attention", "geometry", "probes")


@dataclass
class ReportInfo:
    """What a report call wrote."""

    path: Path
    bytes: int
    sections: list[str]
    figures: list[str]
    pngs: list[Path] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)  # stage -> wall seconds


def model_report(path_or_model: Any, out: str | Path, png_dir: str | Path | None = None,
                 progress: bool = True, *, config: Config | None = None,
                 overrides: Sequence[str] = (), only: str | Iterable[str] | None = None,
                 umap: bool = True, example: int = 0, seed: int = 0,
                 analysis: dict[str, Any] | None = None,
                 history: Sequence[dict[str, Any]] | None = None) -> ReportInfo:
    """Analyse a model and write its report to ``out`` (atomically); PNGs into ``png_dir``."""
    from tqdm.auto import tqdm

    out = _check_out(out)
    times: dict[str, float] = {}
    t0 = time.perf_counter()
    n_steps = 4 + (len(_names(only)) + 1 if analysis is None else 0) + (png_dir is not None)
    bar = tqdm(total=n_steps, desc="report", unit="step", disable=not progress, file=sys.stderr,
               leave=False)
    try:
        bar.set_postfix_str("load")
        model, config, run = _resolve(path_or_model, config, overrides)
        if history is None:
            history = run.get("history") or []
        times["load"] = time.perf_counter() - t0
        bar.update()

        if analysis is None:
            from ..analysis import analyze

            def tick(name: str, seconds: float) -> None:
                times[name] = seconds
                bar.set_postfix_str(name)
                bar.update()

            bar.set_postfix_str("analyses")
            analysis = analyze(model, config, only=only, progress=tick, umap=umap,
                               example=example, seed=seed)
        if "parameters" not in analysis and model is not None:
            from ..analysis import parameter_table

            analysis = {**analysis, "parameters": parameter_table(model).to_dict()}

        t = time.perf_counter()
        bar.set_postfix_str("figures")
        page = build_page(analysis, config, history, run)
        times["figures"] = time.perf_counter() - t
        bar.update()

        info = render_and_write(page, out, png_dir, bar, times)
    finally:
        bar.close()
    times["total"] = time.perf_counter() - t0
    return info


def render_and_write(page, out: Path, png_dir, bar, times: dict[str, float]) -> "ReportInfo":
    """The last stages of every report: render the HTML, write it atomically, then the PNGs."""
    t = time.perf_counter()
    bar.set_postfix_str("html")
    text = page.render()
    times["html"] = time.perf_counter() - t
    bar.update()

    t = time.perf_counter()
    bar.set_postfix_str("write")
    size = write_text(out, text)
    times["write"] = time.perf_counter() - t
    bar.update()

    pngs: list[Path] = []
    if png_dir is not None and page.figures:
        from .png import write_pngs

        t = time.perf_counter()
        bar.set_postfix_str("png")
        pngs = write_pngs(page.figures, png_dir)
        times["png"] = time.perf_counter() - t
        bar.update()
    return ReportInfo(out, size, [s.id for s in page.sections], [f.id for f in page.figures], pngs,
                      times)


def _names(only) -> tuple[str, ...]:
    from ..analysis.run import parse_only

    return parse_only(only)


def _check_out(out: str | Path) -> Path:
    out = Path(out)
    if out.is_dir():
        raise ConfigError(f"--out {out}: is a directory; give a file name such as {out / 'report.html'}")
    return out


def write_text(path: Path, text: str) -> int:
    """Write ``text`` to ``path`` atomically; its size in bytes."""
    from ..checkpoint import atomic_write

    data = text.encode("utf-8")
    atomic_write(path, lambda tmp: tmp.write_bytes(data))
    return len(data)


def _resolve(path_or_model: Any, config: Config | None, overrides: Sequence[str]):
    """(model, config, run record) from a path, a (model, config) pair or a model and ``config``."""
    from ..checkpoint import is_run_dir, load, read_run_json

    if isinstance(path_or_model, (str, Path)):
        path = Path(path_or_model)
        model, cfg = load(path, list(overrides))
        run = read_run_json(path) if path.is_dir() and is_run_dir(path) else {}
        return model, cfg, run
    if isinstance(path_or_model, tuple) and len(path_or_model) == 2:
        path_or_model, config = path_or_model
    if config is None:
        raise ConfigError("model_report: a model needs its config (config=...)")
    if overrides:
        config = config.override(list(overrides))
    return path_or_model, config, {}


# ---- the page --------------------------------------------------------------------------------

def _fmt_metrics(m: dict[str, Any], base: dict[str, Any] | None = None) -> str:
    def one(key: str) -> str:
        if m.get(key) is None:  # a non-finite loss
            return f"{key} -"
        s = f"{key} {m[key]:.4f}"
        if base is not None and base.get(key) is not None:
            s += f" ({m[key] - base[key]:+.4f})"
        return s
    return ", ".join(one(k) for k in ("acc", "seq_acc", "loss"))


def build_page(result: dict[str, Any], config: Config, history: Sequence[dict[str, Any]] = (),
               run: dict[str, Any] | None = None) -> Page:
    """The report page of an analysis result (the dict ``analyze`` returns)."""
    from ..task import token_labels

    run = run or {}
    n_digits = config.task.n_digits
    labels = token_labels(config.task.list_len)
    base = result["metrics"]
    m = config.model
    page = Page(
        title=f"listcopy report: {config.name}",
        subtitle=(f"{m.n_layers} layers, {m.n_heads} head{'s' if m.n_heads > 1 else ''}, d_model "
                  f"{m.d_model}, {n_digits} digits, lists of {config.task.list_len} "
                  f"({config.task.kind}); validation {_fmt_metrics(base)} on {base['n_val']} lists"),
        footer=_footer())

    # ---- overview
    s = page.add(Section(
        "overview", "Overview",
        "The model's configuration, its parameters and, for a listcopy run, the training curve "
        "from its metrics history; accuracies are per output token (acc) and per whole list "
        "(seq_acc) on the validation split."))
    s.tables.append(_config_table(config))
    if "parameters" in result:
        s.tables.append(_parameter_table(result["parameters"]))
    if run:
        s.tables.append(_run_table(run))
    if history:
        s.figures.append(Figure("training_curve",
                                F.training_curve(history, config.train.early_stop_acc)))
        s.numbers = f"{len(history)} evaluations, last at step {history[-1].get('step')}."
    else:
        s.numbers = "No training history (a seed checkpoint or a model passed in)."

    # ---- attention
    if "attention" in result:
        a = result["attention"]
        toks = " ".join(F.token_text(t, n_digits) for t in a["example_tokens"])
        s = page.add(Section(
            "attention", "Attention patterns",
            f"Attention weights of every layer, query positions as rows and key positions as "
            f"columns, for validation example {a['example_index']} [{toks}] and averaged over the "
            f"{base['n_val']} validation lists."))
        leaks = ", ".join(f"L{i} {x:.1e}" for i, x in enumerate(a["max_leak"]))
        const = ", ".join(f"L{i} {'yes' if c else 'no'}" for i, c in enumerate(a["patterns_constant"]))
        s.numbers = (f"Largest attention from an output position onto the input digits: {leaks} "
                     f"({'within' if a['leak_ok'] else 'ABOVE'} the seed's limit "
                     f"{a['leak_eps']:g}). Patterns identical for every input: {const}.")
        s.figures.append(Figure("attention_example", F.attention_heatmaps(
            a["example"], labels, f"Attention Patterns for validation example {a['example_index']}",
            "Attention Pattern")))
        s.figures.append(Figure("attention_mean", F.attention_heatmaps(
            a["mean"], labels, "Average Attention Patterns Across Validation Set",
            "Average Attention")))

    # ---- ablations
    if "mean_attention" in result:
        ma = result["mean_attention"]
        s = page.add(Section(
            "mean_attention", "Mean-attention ablation",
            "Every layer's attention scores replaced by the log of its mean validation pattern, "
            "so each input is attended with the average pattern: how much the model relies on "
            "attention that depends on the input."))
        s.numbers = f"Clean: {_fmt_metrics(base)}. Mean attention: {_fmt_metrics(ma, base)}."
        s.figures.append(Figure("mean_attention", F.mean_attention_bars(ma, base)))
    if "pos_ablation" in result:
        pos = result["pos_ablation"]
        s = page.add(Section(
            "pos_ablation", "Positional-embedding ablation",
            "W_pos subtracted from the residual stream at every position but SEP, at one point "
            "at a time (after the embedding, after each layer): where position information is "
            "still needed."))
        worst = min(pos.items(), key=lambda kv: kv[1]["acc"])
        s.numbers = f"Largest drop: after {F._stage_label(worst[0])}, {_fmt_metrics(worst[1], base)}."
        s.figures.append(Figure("pos_ablation", F.pos_ablation_bars(pos, base)))
    if "skip_ablation" in result:
        sk = result["skip_ablation"]
        s = page.add(Section(
            "skip_ablation", "Skip-connection ablation",
            "Each layer's skip connection removed (zero: the layer passes on only its attention "
            "output) or mean-ablated (resid_pre replaced by its mean over the validation set and "
            "positions), one layer at a time and at all layers at once."))
        s.numbers = (f"All layers, zero: {_fmt_metrics(sk['zero']['all'], base)}; "
                     f"all layers, mean: {_fmt_metrics(sk['mean']['all'], base)}.")
        s.figures.append(Figure("skip_ablation", F.skip_ablation_bars(sk, base)))

    # ---- logit lens
    if "logit_lens" in result:
        lens = result["logit_lens"]
        s = page.add(Section(
            "logit_lens", "Logit lens and attention flow",
            "The residual stream decoded by the unembedding after the embedding and after each "
            "layer (node label: the top token, colour: the target's probability), with the "
            "attention weights that move information between stages, for one validation example."))
        s.numbers = "Decoded accuracy on output positions: " + ", ".join(
            f"{st} {acc:.4f}" for st, acc in zip(lens["stage_labels"], lens["val_acc"])) + "."
        s.figures.append(Figure("attention_flow", F.attention_flow(lens, n_digits)))
        s.figures.append(Figure("logit_lens_accuracy", F.logit_lens_accuracy(lens)))

    # ---- edges
    if "edges" in result:
        e = result["edges"]
        s = page.add(Section(
            "edges", "Edge ablation",
            "One attention edge (layer, query, key) zeroed at a time in the attention pattern, "
            "without renormalising, for every edge the mask allows: the change in validation "
            "accuracy, sorted by effect."))
        s.numbers = (f"{len(e['removable'])} of {len(e['edges'])} edges removable "
                     f"(|\u0394 acc| < {e['tolerance']:g}); all of them removed at once: "
                     f"{_fmt_metrics(e['combined'], base)}.")
        s.figures.append(Figure("edges", F.edge_bars(e)))
        s.tables.append(F.edge_table(e))

    # ---- SEP attention
    if "sep_attention" in result:
        sep = result["sep_attention"]
        right = sum(sep["correct"])
        s = page.add(Section(
            "sep_attention", "SEP attention",
            f"Layer-{sep['layer']} attention scores (before the softmax) from SEP to each input "
            f"digit for every validation list, coloured by whether the model copies the whole "
            f"list right."))
        s.numbers = f"{right} of {len(sep['correct'])} lists right."
        s.figures.append(Figure("sep_attention", F.sep_scatter(sep, seed=0)))

    # ---- geometry
    if "geometry" in result:
        g = result["geometry"]
        s = page.add(Section(
            "geometry", "Embedding geometry",
            "PCA and UMAP of the digit embeddings (rows of W_E) and unembeddings (columns of W_U) "
            "in 2D and 3D, PCA of the positional embeddings, and the angles between digit vectors."))
        nums = [f"{name}: PC1+PC2 explain {_pct2(g['pca'][name])}, nearest-neighbour angle "
                f"{ang['nearest_mean']:.1f} \u00b1 {ang['nearest_std']:.1f}\u00b0"
                for name, ang in g["angles"].items() if name in ("W_E", "W_U")]
        umap = {dim: any((c or {}).get(dim) is not None for c in (g["umap"] or {}).values())
                for dim in ("2d", "3d")}
        s.numbers = "; ".join(nums) + (
            "." if all(umap.values()) else "; UMAP skipped." if g["umap"] is None
            else "; no UMAP (it needs at least 4 digits).")
        s.figures.append(Figure("pca_2d", F.pca_2d(g, labels)))
        s.figures.append(Figure("pca_3d", F.pca_3d(g)))
        if umap["2d"]:
            s.figures.append(Figure("umap_2d", F.umap_2d(g)))
        if umap["3d"]:
            s.figures.append(Figure("umap_3d", F.umap_3d(g)))
        s.figures.append(Figure("angles", F.angle_heatmaps(g)))

    # ---- probes
    if "probes" in result:
        p = result["probes"]
        s = page.add(Section(
            "probes", "Linear probes",
            f"Multinomial logistic regression (solid) and LDA (dashed) predicting each input digit "
            f"from the residual stream at {p['position']} after the embedding and after each "
            f"layer, fitted on {p['n_train']} training lists and scored on {p['n_val']} "
            f"validation lists."))
        last = [r for r in p["rows"] if r["stage_label"] == p["rows"][-1]["stage_label"]]
        s.numbers = "After the last layer: " + "; ".join(
            f"{r['target']} acc {r['logistic']['acc']:.3f}, AUC "
            + (f"{r['logistic']['auc']:.3f}" if r["logistic"]["auc"] is not None else "-")
            for r in last if "logistic" in r) + "."
        s.figures.append(Figure("probes", F.probe_lines(p, n_digits)))
    return page


def _pct2(p: dict[str, Any]) -> str:
    r = [x or 0.0 for x in p["explained_variance_ratio"][:2]]
    return f"{100 * sum(r):.1f}%"


def _footer() -> str:
    from importlib import metadata

    def v(name: str) -> str:
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            return "?"

    return f"listcopy {v('listcopy')}, plotly {v('plotly')}; works offline (plotly.js embedded)."


def _config_table(config: Config) -> Table:
    rows = [{"setting": f"{section}.{k}", "value": v}
            for section, values in config.to_dict().items() for k, v in values.items()]
    return Table(["setting", "value"], rows, caption=f"Config ({config.name})")


def _parameter_table(params: dict[str, Any]) -> Table:
    rows = [{"name": r["name"], "shape": tuple(r["shape"]), "trainable": r["trainable"],
             "numel": r["numel"]} for r in params["rows"]]
    return Table(["name", "shape", "trainable", "numel"], rows,
                 caption=f"Parameters: {params['total']} in all, {params['trainable']} trainable",
                 headers={"numel": "count"})


def _run_table(run: dict[str, Any]) -> Table:
    keys = ("step", "status", "stop_reason", "steps_to_threshold", "wall_time_s")
    rows = [{"field": k, "value": run.get(k)} for k in keys if k in run]
    return Table(["field", "value"], rows, caption="Training run")
