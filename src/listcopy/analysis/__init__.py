"""Studies of trained models, one module per family; each returns a typed, JSON-ready result.

    parameters  the seed's parameter table
    errors      where the clean model's mistakes come from: the order, or a digit not in the list
    attention   example and mean patterns, leak check, constant-pattern check; SEP -> digit scores
    ablation    mean attention, positional embedding, skip connections (zero and mean)
    lens        logit lens and attention flow for one example
    edges       one attention edge zeroed at a time; removable edges
    geometry    PCA, UMAP and angles of W_E, W_U, W_pos
    probes      logistic-regression and LDA probes for each digit at SEP
  the paper "Order by Scale" (order_scale bundles the first five for ``analyze``):
    paths           logits rebuilt as a sum over attention paths; ``NotApplicable``
    decomposition   equation 6: each term's contribution to the gap between outputs
    intervention    pattern weights set (alpha), accuracy before and after
    swapped         equation 5 on swapped pairs; errors against the alpha gap
    separability    output residuals projected on W_pos, hard-margin linear SVC
    pattern_edits   set or zero pattern weights as temporary hooks; the ``--edges`` syntax
    edge_sets       any edge set ablated at once, with the error taxonomy (``listcopy ablate``)
    critical        critical-edge search and the minimal circuit (Figure 1)
    ablate_cli      ``listcopy ablate``
    run         ``analyze``: all of them as one JSON object; ``format_summary``

Only the parameter table is imported eagerly (``listcopy info`` needs nothing else); the rest
load on first use, so importing this package stays cheap.
"""

from ..lazy import lazy_attributes

from .parameters import ParameterRow, ParameterTable, parameter_table

_LAZY = {
    "analyze": "run", "format_summary": "run", "ANALYSES": "run",
    "attention_patterns": "attention", "sep_attention": "attention", "mean_patterns": "attention",
    "mean_attention_ablation": "ablation", "pos_ablation": "ablation", "skip_ablation": "ablation",
    "logit_lens": "lens", "edge_ablation": "edges", "embedding_geometry": "geometry",
    "linear_probes": "probes",
    "fit_probe": "probes", "Metrics": "common", "val_metrics": "common",
    "order_by_scale": "order_scale", "paper_attention": "order_scale",
    "logit_reconstruction": "paths", "rebuild_logits": "paths", "path_coefficients": "paths",
    "NotApplicable": "paths", "delta_logits": "decomposition", "alpha_intervention": "intervention",
    "swapped_pairs": "swapped", "positional_svc": "separability", "pattern_hooks": "pattern_edits",
    "ablation_hooks": "pattern_edits", "edited_patterns": "pattern_edits",
    "parse_edges": "pattern_edits", "ablate_edges": "edge_sets", "critical_edges": "critical",
    "output_errors": "errors",
}

__all__ = ["ParameterRow", "ParameterTable", "parameter_table", *_LAZY]


__getattr__ = lazy_attributes(__name__, _LAZY)
