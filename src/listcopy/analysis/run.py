"""Every analysis of a trained model in one call, as one JSON-ready object, and its summary.

    >>> from listcopy.analysis import analyze, format_summary
    >>> result = analyze(model, config)                    # or only=["edges", "probes"]
    >>> print(format_summary(result))

The keys of the result are a contract (``listcopy analyze --json`` writes it): ``name``,
``config``, ``metrics`` (clean), ``per_position_acc`` (the clean accuracy at o1, o2, ...), and one
key per analysis that ran (``ANALYSES``). Every metrics object has ``loss``, ``acc``, ``seq_acc``,
``per_position_acc`` (and ``n_val``; ablations add ``delta_acc`` and ``delta_loss`` against the
clean model). A part of an analysis that does not apply to the model holds one string saying why.
"""

from __future__ import annotations

import sys
import time
from typing import Any, Callable, Iterable

import torch

from ..config import Config, ConfigError
from ..task import Dataset
from .ablation import mean_attention_ablation, pos_ablation, skip_ablation
from .attention import attention_patterns, sep_attention
from .common import (BATCH_SIZE, check_example, check_val_rows, checked_inputs, to_json,
                     val_metrics)
from .critical import critical_edges
from .critical import summary_lines as critical_summary
from .edges import TOLERANCE, edge_ablation
from .errors import output_errors
from .errors import summary_lines as errors_summary
from .geometry import embedding_geometry
from .lens import logit_lens
from .order_scale import order_by_scale
from .order_scale import summary_lines as order_by_scale_summary
from .parameters import parameter_table
from .probes import linear_probes

ANALYSES = ("parameters", "errors", "attention", "mean_attention", "pos_ablation",
            "skip_ablation", "logit_lens", "edges", "sep_attention", "geometry", "probes",
            "order_by_scale", "critical_edges")

Progress = Callable[[str, float], None]


def parse_only(only: str | Iterable[str] | None) -> tuple[str, ...]:
    """``None`` -> every analysis; ``"edges,probes"`` or a list -> those, in ``ANALYSES`` order."""
    if only is None:
        return ANALYSES
    names = [n.strip() for n in (only.split(",") if isinstance(only, str) else only)]
    names = [n for n in names if n]
    for n in names:
        if n not in ANALYSES and n != "metrics":
            raise ConfigError(f"unknown analysis {n!r}: allowed are metrics, " + ", ".join(ANALYSES))
    if not names:
        raise ConfigError("--only names no analysis: allowed are metrics, " + ", ".join(ANALYSES))
    return tuple(a for a in ANALYSES if a in names)


def _progress(progress: bool | Progress) -> Progress | None:
    if callable(progress):
        return progress
    if progress:
        return lambda name, seconds: print(f"  {name:<15} {seconds:7.2f} s", file=sys.stderr)
    return None


@torch.no_grad()
def analyze(model, config: Config, only: str | Iterable[str] | None = None,
            progress: bool | Progress = False, *, data: Dataset | None = None, example: int = 0,
            tolerance: float = TOLERANCE, umap: bool = True, seed: int = 0,
            batch_size: int = BATCH_SIZE, bars: bool | None = None,
            val_rows: int | None = None) -> dict[str, Any]:
    """Run the analyses named in ``only`` (default: all) on ``model``; one JSON-ready dict.

    ``example`` is the validation row shown by ``attention`` and ``logit_lens``; ``tolerance`` the
    accuracy change below which an edge counts as removable (and, for ``critical_edges``, the drop
    beyond which an edge is critical); ``umap=False`` skips the geometry's UMAP (and its JIT; the
    order-by-scale points get only PCA here, UMAP in ``listcopy paper``); ``seed`` seeds UMAP and
    the probes. ``progress`` (True, or a callable taking the analysis's name and its seconds)
    reports each analysis's time; ``bars`` (default: ``progress``): a stderr bar in edge searches.
    ``val_rows``: the first that many validation lists only (the split is shuffled; default all).
    """
    names, bar = parse_only(only), bool(progress) if bars is None else bars
    data = checked_inputs(model, config, data, batch_size).first_val(check_val_rows(val_rows))
    check_example(example, data)
    report = _progress(progress)
    was_training = model.training
    model.eval()
    try:
        result: dict[str, Any] = {"name": config.name, "config": config.to_dict()}

        def timed(name: str, fn: Callable[[], Any]) -> Any:
            return _timed(report, name, fn)

        base = timed("metrics", lambda: val_metrics(model, data, batch_size=batch_size))
        result["metrics"] = base.to_dict()
        result["per_position_acc"] = result["metrics"]["per_position_acc"]
        done: dict[str, Any] = {}

        def means():  # the attention analysis's mean patterns, if it ran
            return done["attention"].mean if "attention" in done else None

        steps: dict[str, Callable[[], Any]] = {
            "parameters": lambda: parameter_table(model),
            "errors": lambda: output_errors(model, config, data, batch_size),
            "attention": lambda: attention_patterns(model, config, data, example, batch_size),
            "mean_attention": lambda: mean_attention_ablation(model, config, data, means(), batch_size),
            "pos_ablation": lambda: pos_ablation(model, config, data, batch_size),
            "skip_ablation": lambda: skip_ablation(model, config, data, batch_size),
            "logit_lens": lambda: logit_lens(model, config, data, example, batch_size),
            "edges": lambda: _with_bar("edges", bar, lambda p: edge_ablation(
                model, config, data, tolerance, batch_size, progress=p)),
            "sep_attention": lambda: sep_attention(model, config, data, 0, batch_size),
            "geometry": lambda: embedding_geometry(model, config, umap=umap, seed=seed),
            "probes": lambda: linear_probes(model, config, data, seed=seed, batch_size=batch_size),
            "order_by_scale": lambda: order_by_scale(model, config, data, False, seed, batch_size),
            "critical_edges": lambda: _with_bar("critical edges", bar, lambda p: critical_edges(
                model, config, data, tolerance, example=example, batch_size=batch_size,
                progress=p)),
        }
        for name in names:
            done[name] = timed(name, steps[name])
            result[name] = to_json(done[name])
        return result
    finally:
        model.train(was_training)


def _timed(report: Progress | None, name: str, fn: Callable[[], Any]) -> Any:
    """``fn()``, its seconds told to ``report`` (if any) with ``name``."""
    t0 = time.perf_counter()
    value = fn()
    if report is not None:
        report(name, time.perf_counter() - t0)
    return value


def _with_bar(desc: str, bar: bool, work: Callable[[Callable[[int, int], None] | None], Any]):
    """``work(progress)``: with ``bar``, a progress bar on stderr that ``progress(done, total)``
    advances (shown after a second; a list_len 64 model has about 12,000 edges to search)."""
    if not bar:
        return work(None)
    from tqdm.auto import tqdm

    with tqdm(total=None, desc=desc, unit="edge", delay=1.0, leave=False, file=sys.stderr,
              dynamic_ncols=True) as shown:
        def progress(done: int, total: int) -> None:
            shown.total = total
            shown.update(done - shown.n)

        return work(progress)


# ---- the readable summary: a few lines per analysis, from a table ---------------------------

def _m(m: dict) -> str:
    delta = f" ({m['delta_acc']:+.4f})" if "delta_acc" in m else ""
    return f"acc {m['acc']:.4f}{delta} seq_acc {m['seq_acc']:.4f} loss {m['loss']:.4f}"


def _parameters(p: dict) -> list[str]:
    return [f"parameters: {p['total']} in all, {p['trainable']} trainable"]


def _attention(a: dict) -> list[str]:
    leaks = ", ".join(f"L{i} {x:.2e}" for i, x in enumerate(a["max_leak"]))
    const = ", ".join(f"L{i} {'yes' if c else 'no'}" for i, c in enumerate(a["patterns_constant"]))
    ok = "ok" if a["leak_ok"] else f"LEAK above {a['leak_eps']:g}"
    return [f"attention: max leak onto inputs {leaks} ({ok}); patterns constant: {const}"]


def _mean_attention(m: dict) -> list[str]:
    return [f"mean attention: {_m(m)}"]


def _pos_ablation(pos: dict) -> list[str]:
    return ["W_pos removed (but at SEP):"] + [f"  {name:<28} {_m(m)}" for name, m in pos.items()]


def _skip_ablation(skip: dict) -> list[str]:
    lines = []
    for kind in ("zero", "mean"):
        lines.append(f"skip connection, {kind}:")
        lines += [f"  {'layer ' + k if k != 'all' else 'all layers':<12} {_m(m)}"
                  for k, m in skip[kind].items()]
    return lines


def _logit_lens(lens: dict) -> list[str]:
    accs = ", ".join(f"{s} {a:.4f}" for s, a in zip(lens["stage_labels"], lens["val_acc"]))
    toks = " ".join(str(t) for t in lens["tokens"])
    return ([f"logit lens, output acc per stage: {accs}",
             f"  example {lens['example_index']} [{toks}]:"]
            + [f"  {s:<6} " + " ".join(f"{t:>4}" for t in top)
               for s, top in zip(lens["stage_labels"], lens["top_token"])])


def _edges(e: dict) -> list[str]:
    crit = sorted((r for r in e["edges"] if abs(r["delta_acc"]) >= e["tolerance"]),
                  key=lambda r: r["delta_acc"])
    return ([f"edges: {len(e['removable'])} of {len(e['edges'])} removable"
             f" (|delta acc| < {e['tolerance']:g}); all removed at once: {_m(e['combined'])}"]
            + [f"  L{r['layer']} {r['label']:<10} delta acc {r['delta_acc']:+.4f}" for r in crit])


def _sep_attention(s: dict) -> list[str]:
    return [f"SEP attention (layer {s['layer']}): {len(s['correct'])} examples, "
            f"{sum(s['correct'])} right"]


def _geometry(g: dict) -> list[str]:
    lines = []
    for name, a in g["angles"].items():
        ev = g["pca"][name]["explained_variance_ratio"][:3]
        lines.append(f"{name}: nearest-neighbour angle {a['nearest_mean']:.2f} +- "
                     f"{a['nearest_std']:.2f} deg; PCA variance {', '.join(f'{v:.3f}' for v in ev)}")
    return lines + (["UMAP: skipped"] if g["umap"] is None else [])


def _probes(p: dict) -> list[str]:
    lines = [f"probes at {p['position']} (train {p['n_train']}, val {p['n_val']}):"]
    for r in p["rows"]:
        parts = [f"{k} acc {r[k]['acc']:.3f} auc "
                 + (f"{r[k]['auc']:.3f}" if r[k]["auc"] is not None else "-")
                 for k in ("logistic", "lda") if k in r]
        lines.append(f"  {r['stage_label']:<6} {r['target']:<3} " + "; ".join(parts))
    return lines


# analysis key -> its summary lines, in the order they are printed
SUMMARIES: dict[str, Callable[[dict], list[str]]] = {
    "parameters": _parameters, "errors": errors_summary, "attention": _attention,
    "mean_attention": _mean_attention,
    "pos_ablation": _pos_ablation, "skip_ablation": _skip_ablation, "logit_lens": _logit_lens,
    "edges": _edges, "sep_attention": _sep_attention, "geometry": _geometry, "probes": _probes,
    "order_by_scale": order_by_scale_summary, "critical_edges": critical_summary,
}


def format_summary(result: dict[str, Any]) -> str:
    """A few lines per analysis present in ``result`` (the dict :func:`analyze` returns)."""
    lines = [f"{result['name']}: {_m(result['metrics'])}  (n_val {result['metrics']['n_val']})"]
    for key, summary in SUMMARIES.items():
        if key in result:
            lines += summary(result[key])
    return "\n".join(lines)
