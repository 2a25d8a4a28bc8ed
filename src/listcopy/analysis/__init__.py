"""Studies of trained models, one module per family; each returns a typed, JSON-ready result.

    parameters  the seed's parameter table
    attention   example and mean patterns, leak check, constant-pattern check; SEP -> digit scores
    ablation    mean attention, positional embedding, skip connections (zero and mean)
    lens        logit lens and attention flow for one example
    edges       one attention edge zeroed at a time; removable edges
    geometry    PCA, UMAP and angles of W_E, W_U, W_pos
    probes      logistic-regression and LDA probes for each digit at SEP
    run         ``analyze``: all of them as one JSON object; ``format_summary``

Only the parameter table is imported eagerly (``listcopy info`` needs nothing else); the rest
load on first use, so importing this package stays cheap.
"""

from .parameters import ParameterRow, ParameterTable, parameter_table

_LAZY = {
    "analyze": "run", "format_summary": "run", "ANALYSES": "run",
    "attention_patterns": "attention", "sep_attention": "attention", "mean_patterns": "attention",
    "mean_attention_ablation": "ablation", "pos_ablation": "ablation", "skip_ablation": "ablation",
    "logit_lens": "lens", "edge_ablation": "edges", "embedding_geometry": "geometry",
    "linear_probes": "probes",
    "fit_probe": "probes", "Metrics": "common", "val_metrics": "common",
}

__all__ = ["ParameterRow", "ParameterTable", "parameter_table", *_LAZY]


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module 'listcopy.analysis' has no attribute {name!r}")
