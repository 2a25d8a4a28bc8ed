"""``listcopy frontier``: the smallest d_model at which a task still passes, per point."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

from .args import UsageError, add_config_args, load_args_config


def register(subparsers) -> None:
    p = subparsers.add_parser("frontier", help="capacity frontier: the smallest d_model that passes")
    add_config_args(p)
    p.add_argument("--task", choices=("copy", "reverse", "sort"), help="task.kind")
    p.add_argument("--axis", action="append", default=[], metavar="KEY=V1,V2",
                   help="an axis of points, e.g. task.n_digits=10,20,50 (repeatable)")
    p.add_argument("--layers", metavar="N1,N2", help="model.n_layers values, e.g. 2,3,4")
    p.add_argument("--seeds", type=int, default=8, metavar="N", help="seeds 0..N-1 per point")
    p.add_argument("--threshold", type=float, help="validation acc to reach (train.early_stop_acc)")
    p.add_argument("--need", type=float, default=0.5, help="fraction of seeds that must reach it")
    p.add_argument("--d-max", type=int, default=256, help="largest d_model tried")
    p.add_argument("--out", metavar="DIR", help="sweep directory (default runs/frontier-TASK)")
    p.add_argument("--workers", type=int, metavar="N", help="worker processes (default: cores)")
    p.add_argument("--backend", choices=("local", "ray"), default="local")
    p.add_argument("--address", help="Ray cluster address (default: start a local one)")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=cmd_frontier)


def cmd_frontier(args: argparse.Namespace) -> int:
    from ..checkpoint import write_json
    from ..frontier import format_frontier, search_frontier, sweep_evaluate

    base, axes = _points(args)
    out = Path(args.out) if args.out else Path("runs") / f"frontier-{base.task.kind}"
    evaluate = sweep_evaluate(out, workers=args.workers, backend=args.backend,
                              address=args.address, progress=not args.quiet)
    points = search_frontier(base, axes, range(args.seeds), evaluate, d_max=args.d_max,
                             need=args.need)
    write_json(out / "frontier.json", {
        "task": base.task.kind, "base": base.to_dict(), "axes": axes, "seeds": args.seeds,
        "need": args.need, "threshold": base.train.early_stop_acc, "d_max": args.d_max,
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
    if args.layers:
        axes["model.n_layers"] = parse_axis(f"model.n_layers={args.layers}")[1]
    if not axes:
        axes = {"task.n_digits": [base.task.n_digits]}
    if args.seeds < 1:
        raise UsageError("--seeds must be >= 1")
    if args.d_max < 1:
        raise UsageError("--d-max must be >= 1")
    if not 0 < args.need <= 1:
        raise UsageError("--need must be in (0, 1]")
    return base, axes


def parse_axis(text: str) -> tuple[str, list]:
    """``task.n_digits=10,20,50`` -> ("task.n_digits", [10, 20, 50])."""
    from ..config import parse_value

    key, sep, values = text.partition("=")
    items = [v for v in values.split(",") if v.strip()]
    if not sep or not re.fullmatch(r"[a-z_]+\.[a-z_0-9]+", key.strip()) or not items:
        raise UsageError(f"--axis {text!r}: use section.key=v1,v2,... (e.g. task.n_digits=10,20)")
    return key.strip(), [parse_value(v) for v in items]
