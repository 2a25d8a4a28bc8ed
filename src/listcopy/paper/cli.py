"""``listcopy paper [--out DIR] [--model PATH ...] [--set k=v ...] [--grid SWEEP_DIR]``: the
paper "Order by Scale" reproduced: its 2- and 3-layer models trained (or taken with ``--model``),
analysed, and written as one offline HTML page and a JSON of every number.
``listcopy paper --grid SWEEP_DIR --table-only [--errors]`` prints Table 4 of a sweep (and each
run's errors and how it ends) and trains nothing.

``register(subparsers)`` adds the command; nothing heavy is imported until it runs. Bad input
raises (exit 2, one line through ``listcopy.cli.main``).
"""

from __future__ import annotations

import argparse
import sys

from ..cli.args import add_command, add_config_args, path_arg


def register(subparsers) -> None:
    p = add_command(
        subparsers, "paper", "the paper 'Order by Scale' reproduced: models, figures, numbers",
        "Train (or take) the paper's 2-layer and 3-layer models, run its analyses "
                    "and write DIR/paper.html (Figures 1-4, the numbers of sections 4.1-4.3 "
                    "beside the paper's, Table 4 with --grid) and DIR/paper.json.")
    p.add_argument("--out", default="paper", type=path_arg, metavar="DIR",
                   help="output directory (default ./paper); models train under DIR/models")
    p.add_argument("--model", action="append", default=[], metavar="PATH",
                   help="a trained 2- or 3-layer model (run directory or .pt) to use instead of "
                        "training it (repeatable)")
    add_config_args(p, config_file=False,
                    set_help="override a setting of both models (repeatable)")
    p.add_argument("--grid", metavar="SWEEP_DIR",
                   help="a sweep of the paper's grid (examples/paper_grid.toml) for Table 4")
    p.add_argument("--table-only", action="store_true",
                   help="print Table 4 of --grid as markdown and stop (trains nothing, writes "
                        "nothing)")
    p.add_argument("--errors", action="store_true",
                   help="with --table-only: then where each run's errors come from, and how it "
                        "ends (solved, nearly, first output only, order lost, too narrow)")
    p.add_argument("--no-umap", action="store_true", help="PCA only for the positional points")
    p.add_argument("--threads", type=int, metavar="N", help="torch CPU threads")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=cmd_paper)


def cmd_paper(args: argparse.Namespace) -> int:
    from ..cli.args import check_threads

    check_threads(args.threads)
    if args.table_only:
        return print_table4(args)
    if args.errors:
        from ..config import ConfigError

        raise ConfigError("--errors goes with --table-only (and --grid SWEEP_DIR)")
    import torch

    from .run import paper_report

    if args.threads:
        torch.set_num_threads(args.threads)
    info = paper_report(args.out, args.model, args.set, args.grid, umap=not args.no_umap,
                        progress=not args.quiet)
    print(f"wrote {info.html} and {info.json} (sections: {', '.join(info.sections)})",
          file=sys.stderr)
    return 0


def print_table4(args: argparse.Namespace) -> int:
    from ..config import ConfigError
    from .page import errors_markdown, table4_markdown

    if args.grid is None:
        raise ConfigError("--table-only prints Table 4 of a sweep: give it with --grid SWEEP_DIR")
    if args.model or args.set:
        raise ConfigError("--table-only trains nothing: --model and --set do not apply")
    print(table4_markdown(args.grid))
    if args.errors:
        print("\n" + errors_markdown(args.grid))
    return 0
