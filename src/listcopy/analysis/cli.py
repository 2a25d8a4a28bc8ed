"""``listcopy analyze PATH [--set k=v ...] [--only NAMES] [--json FILE]``: every analysis of a run
directory or seed ``.pt``, printed as a summary, and written as one JSON object with ``--json``.

``register(subparsers)`` adds the command to the ``listcopy`` parser; nothing heavy is imported
until the command runs. Bad input raises (``UsageError``, ``ConfigError``, ``CheckpointError``:
exit 2), and ``listcopy.cli.main`` prints it as one line.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

from ..cli.args import add_command, add_config_args, add_val_rows


def register(subparsers) -> None:
    """Add the ``analyze`` command to ``subparsers`` (from ``parser.add_subparsers()``)."""
    p = add_command(subparsers, "analyze",
                    "interpretability analyses of a run or seed .pt (summary, --json)",
                    "Attention, ablations, logit lens, edges, geometry, probes and the analyses "
                    "of the paper 'Order by Scale' of a trained model, on the seed's validation "
                    "split.", model_path=True)
    add_config_args(p, config_file=False)
    p.add_argument("--only", metavar="NAMES",
                   help="comma-separated analyses to run (default all): parameters, attention, "
                        "mean_attention, pos_ablation, skip_ablation, logit_lens, edges, "
                        "sep_attention, geometry, probes, order_by_scale, critical_edges")
    p.add_argument("--json", metavar="FILE", help="write the whole result as one JSON object "
                                                  "('-' for standard output)")
    p.add_argument("--example", type=int, default=0, metavar="N",
                   help="validation row shown by attention and logit_lens (default 0, the seed's)")
    p.add_argument("--tolerance", type=float, default=1e-3, metavar="T",
                   help="edges: accuracy change below which an edge is removable; "
                        "critical_edges: the drop beyond which an edge is critical (default 0.001)")
    add_val_rows(p)
    p.add_argument("--no-umap", action="store_true", help="skip UMAP (saves its ~10 s JIT)")
    p.add_argument("--seed", type=int, default=0, help="seed of UMAP and the probes (default 0)")
    p.add_argument("--threads", type=int, metavar="N", help="torch CPU threads")
    p.add_argument("--quiet", action="store_true", help="no per-analysis timings on stderr")
    p.set_defaults(func=cmd_analyze)


def cmd_analyze(args: argparse.Namespace) -> int:
    from ..cli.args import UsageError, check_json_arg, check_threads, check_val_rows_arg
    from .run import format_summary, parse_only

    parse_only(args.only)  # unknown names fail before anything loads
    check_json_arg(args.json)
    check_threads(args.threads)
    if args.seed < 0:
        raise UsageError(f"--seed {args.seed}: must be >= 0")
    check_val_rows_arg(args.val_rows)
    if not 0 <= args.tolerance < math.inf:
        raise UsageError(f"--tolerance {args.tolerance}: must be a finite number >= 0")
    import torch

    from ..checkpoint import load
    from ..resources import guard_analysis
    from .common import large_split_notice
    from .run import analyze

    if args.threads:
        from threadpoolctl import threadpool_limits

        torch.set_num_threads(args.threads)
        threadpool_limits(limits=args.threads)
    from ..cli.args import print_notice

    model, config = load(args.path, args.set, notice=print_notice)
    guard_analysis(config)
    if line := large_split_notice(config, args.val_rows):
        print_notice(line)
    result = analyze(model, config, only=args.only, progress=not args.quiet, example=args.example,
                     tolerance=args.tolerance, umap=not args.no_umap, seed=args.seed,
                     val_rows=args.val_rows)
    return print_result(result, format_summary, args.json)


def print_result(result: dict, summary, json_arg: str | None) -> int:
    """``--json -``: the result as one JSON line on standard output; otherwise ``summary(result)``
    printed, and with ``--json FILE`` the JSON written there atomically."""
    text = json.dumps(result, allow_nan=False)
    if json_arg == "-":
        print(text)
        return 0
    print(summary(result))
    if json_arg:
        from ..checkpoint import atomic_write

        atomic_write(Path(json_arg), lambda tmp: tmp.write_text(text + "\n"))
        print(f"wrote {json_arg}", file=sys.stderr)
    return 0
