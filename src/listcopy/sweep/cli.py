"""``listcopy sweep`` and ``listcopy results``: parse, call one function, print.

``register(subparsers)`` adds both commands to the ``listcopy`` parser. Bad input (a grid file, an
option, a sweep database) raises a ``BadInput`` (exit 2), a sweep that cannot go on (a busy
directory, a worker process that died) a ``Failure`` (exit 1); ``listcopy.cli.main`` prints either
as one line. ``sweep`` exits 1 when any run of the grid failed (the others are still trained and
recorded).
"""

from __future__ import annotations

import argparse
import sys


def cmd_sweep(args: argparse.Namespace) -> int:
    from ..cli.args import check_backend, check_sweep_dir, check_threads
    from .grid import load_grid
    from .runner import default_out, format_plan, plan, run_sweep

    out = check_sweep_dir(args.out or default_out(args.grid))
    check_threads(args.threads)
    check_backend(args.backend, args.address, probe=not args.dry_run)
    grid = load_grid(args.grid, args.allow_large, progress=not args.quiet)
    for name in grid.shared_names:
        print(f"listcopy: {args.grid}: several [[specs]] are named {name!r}; their entries stay "
              "apart by their settings (results --group-by name will not pool them)",
              file=sys.stderr)
    options = dict(workers=args.workers, threads=args.threads, retry_failed=args.retry_failed,
                   max_members=args.max_members, allow_large=args.allow_large)
    if args.dry_run:
        print(format_plan(plan(grid, out, progress=not args.quiet, **options)))
        return 0
    summary = run_sweep(grid, out, backend=args.backend, address=args.address,
                        progress=not args.quiet, **options)
    c = summary.counts
    print(f"{summary.n_runs} runs ({summary.n_entries} entries): {c['done']} done, "
          f"{c['failed']} failed"
          + (f", {c['pending'] + c['running']} unfinished" if c["pending"] + c["running"] else "")
          + f"; {summary.trained} trained now, {summary.skipped} already finished;"
          f" {summary.wall_time_s:.1f} s")
    print(f"results: listcopy results {summary.out}")
    return 1 if c["failed"] or c["pending"] or c["running"] else 0


def cmd_results(args: argparse.Namespace) -> int:
    from ..cli.args import UsageError
    from .results import format_results, load_rows

    group_by = None
    if args.group_by is not None:
        group_by = [k.strip() for k in args.group_by.split(",") if k.strip()]
        if not group_by:
            raise UsageError(f"--group-by {args.group_by!r}: no keys (e.g. name or model.d_model)")
    print(format_results(load_rows(args.dir), args.format, group_by, args.table))
    return 0


SWEEP_DESCRIPTION = ("Train every run of GRID.toml not yet finished in the sweep directory "
                     "(results in DIR/sweep.db). Re-run the same command to resume, even after "
                     "kill -9; a second sweep on a directory in use is refused.")


def register(subparsers) -> None:
    """Register ``sweep`` and ``results`` on the main parser's subparsers."""
    from ..cli.args import add_allow_large, add_command, count_arg, path_arg, positive_arg

    p = add_command(subparsers, "sweep",
                    "train a grid of configurations x seeds, in parallel, resumable",
                    SWEEP_DESCRIPTION)
    p.add_argument("grid", metavar="GRID.toml",
                   help="grid file: base config, [[specs]], [axes], seeds")
    p.add_argument("--out", type=path_arg, metavar="DIR",
                   help="sweep directory (default sweeps/GRID)")
    p.add_argument("--workers", type=count_arg, metavar="N",
                   help="worker processes (default: the number of cores; 0 = in this process); "
                        "with --backend ray, groups in flight")
    p.add_argument("--threads", type=positive_arg, metavar="N",
                   help="torch threads per worker (default: cores / workers)")
    p.add_argument("--backend", choices=("local", "ray"), default="local")
    p.add_argument("--address", metavar="ADDR",
                   help="Ray cluster: auto or HOST:PORT (default: start a local one)")
    p.add_argument("--max-members", type=count_arg, metavar="N",
                   help="at most N runs trained together in one group")
    p.add_argument("--retry-failed", action="store_true", help="train failed runs again")
    p.add_argument("--dry-run", action="store_true",
                   help="list the runs and how they are grouped, without training")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    add_allow_large(p)
    p.set_defaults(func=cmd_sweep)

    p = add_command(subparsers, "results", "a sweep's results table, and aggregated over seeds")
    p.add_argument("dir", metavar="DIR", help="sweep directory (or its sweep.db)")
    p.add_argument("--format", choices=("markdown", "csv", "json"), default="markdown")
    p.add_argument("--group-by", metavar="KEYS",
                   help="aggregate by these comma-separated keys (name, model.d_model or d_model,"
                        " ...) instead of over seeds")
    p.add_argument("--table", choices=("runs", "summary"),
                   help="only this table (default: both; csv: runs, or summary with --group-by)")
    p.set_defaults(func=cmd_results)

