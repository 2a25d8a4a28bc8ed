"""``listcopy ablate PATH --edges "0:4-3,0-0;1:2-1" [--no-renorm] [--json FILE]``: a set of
attention edges ablated at once on a run directory or seed ``.pt``; accuracy, per-position
accuracy and the error taxonomy, printed and written as one JSON object with ``--json``.

``register(subparsers)`` adds the command; nothing heavy is imported until it runs. Bad input
raises (``ConfigError``, ``CheckpointError``: exit 2, one line through ``listcopy.cli.main``).
"""

from __future__ import annotations

import argparse

from ..cli.args import add_command, add_config_args


def register(subparsers) -> None:
    p = add_command(
        subparsers, "ablate", "ablate a set of attention edges: accuracy and where the errors come from",
        "Zero the attention weights of the given edges (layer, query, key) at once, "
                    "renormalising the touched rows (divide by max(row sum, 1e-12)) unless "
                    "--no-renorm, and report acc, seq_acc, per-position accuracy and, per output "
                    "position, the wrong rate and how often a wrong prediction equals the "
                    "previous output's prediction or each input digit.", model_path=True)
    p.add_argument("--edges", required=True, metavar="EDGES",
                   help='layers separated by ";", each LAYER:Q-K,Q-K,... with positions by index,'
                        ' e.g. "0:4-3,0-0,1-0;1:0-0,1-0,2-0,2-1,4-3"')
    p.add_argument("--no-renorm", action="store_true", help="zero only, rows not renormalised")
    add_config_args(p, config_file=False)
    p.add_argument("--json", metavar="FILE", help="write the result as one JSON object "
                                                  "('-' for standard output)")
    p.set_defaults(func=cmd_ablate)


def format_result(r: dict) -> str:
    lines = [f"edges {r['edges']} ({'renormalised' if r['renorm'] else 'not renormalised'}): "
             f"acc {r['acc']:.4f} ({r['delta_acc']:+.4f}) seq_acc {r['seq_acc']:.4f}, per "
             f"position " + " ".join(f"{a:.4f}" for a in r["per_position_acc"])]
    for pos, e in r["errors"].items():
        rates = ", ".join(f"{k} {v:.1%}" for k, v in e.items()
                          if k.startswith("eq_") and v is not None)
        lines.append(f"  {pos}: wrong {e['wrong']:.1%} ({e['n_wrong']})" + (f"; of those {rates}"
                                                                           if rates else ""))
    return "\n".join(lines)


def cmd_ablate(args: argparse.Namespace) -> int:
    from ..checkpoint import load
    from ..cli.args import check_json_arg
    from ..config import ConfigError
    from ..task import model_masks
    from .cli import print_result
    from .edge_sets import ablate_edges
    from .pattern_edits import parse_edges

    check_json_arg(args.json)
    model, config = load(args.path, args.set)
    edges = parse_edges(args.edges, config.model.n_layers, config.task.seq_len)
    masks = model_masks(config)
    masked = next((e for e in edges if not masks[e[0]].scored[e[1], e[2]]), None)
    if masked is not None:
        layer, q, k = masked
        raise ConfigError(f"edge {layer}:{q}-{k}: the mask keeps query {q} from key {k} in layer "
                          f"{layer} (its weight is 0 already)")
    result = ablate_edges(model.eval(), config, edges, renorm=not args.no_renorm).to_dict()
    return print_result(result, format_result, args.json)
