"""``listcopy frontier``: the smallest d_model at which a task still passes, per point."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

from .args import (UsageError, add_allow_large, add_command, add_config_args, check_backend,
                   check_sweep_dir, count_arg, limits, load_args_config, path_arg)


def register(subparsers) -> None:
    p = add_command(subparsers, "frontier", "capacity frontier: the smallest d_model that passes")
    add_config_args(p)
    p.add_argument("--task", choices=("copy", "reverse", "sort"), help="task.kind")
    p.add_argument("--axis", action="append", default=[], metavar="KEY=V1,V2",
                   help="an axis of points, e.g. task.n_digits=10,20,50 (repeatable)")
    p.add_argument("--layers", metavar="N1,N2", help="model.n_layers values, e.g. 2,3,4")
    p.add_argument("--seeds", type=int, default=8, metavar="N", help="seeds 0..N-1 per point")
    p.add_argument("--threshold", type=float, help="validation acc to reach (train.early_stop_acc)")
    p.add_argument("--need", type=float, default=0.5, help="fraction of seeds that must reach it")
    p.add_argument("--d-max", type=int, default=256, help="largest d_model tried")
    p.add_argument("--all-seeds", action="store_true",
                   help="train every seed to its end (exact fractions per d_model); by default a "
                        "d_model's other seeds stop once enough have passed")
    p.add_argument("--out", type=path_arg, metavar="DIR",
                   help="sweep directory (default runs/frontier-TASK)")
    p.add_argument("--workers", type=count_arg, metavar="N",
                   help="worker processes (default: cores; 0 = in this process)")
    p.add_argument("--backend", choices=("local", "ray"), default="local")
    p.add_argument("--address", help="Ray cluster address (default: start a local one)")
    p.add_argument("--quiet", action="store_true")
    add_allow_large(p)
    p.set_defaults(func=cmd_frontier)


def cmd_frontier(args: argparse.Namespace) -> int:
    from ..checkpoint import write_json
    from ..frontier import format_frontier, search_frontier, seeds_needed, sweep_evaluate

    base, axes = _points(args)
    _guard(base, axes, args)
    check_backend(args.backend, args.address)
    out = check_sweep_dir(args.out or Path("runs") / f"frontier-{base.task.kind}")
    quorum = None if args.all_seeds else seeds_needed(args.need, args.seeds)
    evaluate = sweep_evaluate(out, workers=args.workers, backend=args.backend,
                              address=args.address, progress=not args.quiet,
                              allow_large=args.allow_large, quorum=quorum)
    points = search_frontier(base, axes, range(args.seeds), evaluate, d_max=args.d_max,
                             need=args.need)
    write_json(out / "frontier.json", {
        "task": base.task.kind, "base": base.to_dict(), "axes": axes, "seeds": args.seeds,
        "need": args.need, "all_seeds": args.all_seeds, "threshold": base.train.early_stop_acc,
        "d_max": args.d_max,
        "points": [p.to_dict() for p in points]})
    print(format_frontier(points, args.d_max))
    print(f"frontier.json and the sweep database in {out}")
    return 0


def _points(args: argparse.Namespace):
    """The base config and the axes of points, from the options (checked before any work)."""
    extra = [f"task.kind={args.task}"] if args.task else []
    if args.threshold is not None:
        extra.append(f"train.early_stop_acc={args.threshold}")
    base = load_args_config(args, extra)
    axes = dict(parse_axis(a) for a in args.axis)
    if args.layers is not None:
        axes["model.n_layers"] = parse_values(args.layers, f"--layers {args.layers!r}", "2,3")
    searched = [k for k in axes if k in ("model.d_model", "train.seed")]
    if any(a.partition("=")[0].strip() == "model.d_model" for a in args.set):
        raise UsageError("--set model.d_model: frontier searches model.d_model itself, from "
                         "n_heads up to --d-max")
    if searched:
        raise UsageError(f"--axis {searched[0]}: frontier searches model.d_model itself and takes"
                         " its seeds from --seeds; give the other settings as axes")
    if not axes:
        axes = {"task.n_digits": [base.task.n_digits]}
    if args.seeds < 1:
        raise UsageError("--seeds must be >= 1")
    max_seeds = limits(args).max_seeds
    if max_seeds is not None and args.seeds > max_seeds:
        raise UsageError(f"--seeds {args.seeds}: at most {max_seeds:,} seeds (--allow-large for "
                         "more)")
    if args.d_max < 1:
        raise UsageError("--d-max must be >= 1")
    if not 0 < args.need <= 1:
        raise UsageError("--need must be in (0, 1]")
    return base, axes


def _guard(base, axes: dict, args: argparse.Namespace) -> None:
    """The worst round before any work: every point at ``--d-max`` with all its seeds, trained
    by the sweep's workers (policy limits on layers and runs, and memory)."""
    from ..frontier import frontier_configs, round_configs
    from ..resources import guard_groups, over_limit
    from ..sweep.runner import cpu_count

    points = frontier_configs(base, axes)
    err = over_limit(f"frontier: {len(points):,} points x {args.seeds:,} seeds",
                     len(points) * args.seeds, limits(args).max_entries, "runs in one round")
    if err is not None:
        raise err
    worst = round_configs(base, points, args.d_max)
    workers = cpu_count() if args.workers is None else max(1, args.workers)
    guard_groups([(c, args.seeds) for c in worst], workers, limits(args),
                 f"frontier round at d_model {args.d_max}")


def parse_axis(text: str) -> tuple[str, list]:
    """``task.n_digits=10,20,50`` -> ("task.n_digits", [10, 20, 50])."""
    key, sep, values = text.partition("=")
    if not sep or not re.fullmatch(r"[a-z_]+\.[a-z_0-9]+", key.strip()):
        raise UsageError(f"--axis {text!r}: use section.key=v1,v2,... (e.g. task.n_digits=10,20)")
    return key.strip(), parse_values(values, f"--axis {text!r}", "task.n_digits=10,20")


def parse_values(text: str, given: str, example: str) -> list:
    """``10,20,50`` -> [10, 20, 50]: at least one value, none twice (the same point twice)."""
    from ..config import parse_value

    values = [parse_value(v) for v in text.split(",") if v.strip()]
    if not values:
        raise UsageError(f"{given}: no values (e.g. {example})")
    twice = next((v for i, v in enumerate(values) if v in values[:i]), None)
    if twice is not None:
        raise UsageError(f"{given}: {twice!r} is given twice")
    return values
