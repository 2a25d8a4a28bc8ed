"""The ``listcopy`` command: parse, call one library function, print.

Bad input (a config value, an unknown key, a missing or corrupt checkpoint) ends with one line on
stderr and exit status 2. torch is imported only by the commands that need it, so ``--help`` is fast.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path
from typing import Sequence

EXIT_BAD_INPUT = 2


class UsageError(ValueError):
    """A command-line value that cannot be used (one line)."""


def parse_seeds(text: str) -> list[int]:
    """``0-63``, ``0,3,7`` or ``0-3,8`` -> sorted distinct seeds."""
    seeds: set[int] = set()
    for part in text.split(","):
        part = part.strip()
        m = re.fullmatch(r"(\d+)(?:-(\d+))?", part)
        if not m:
            raise UsageError(f"--seeds {text!r}: use a range like 0-63 or a list like 0,3,7")
        lo = int(m.group(1))
        hi = int(m.group(2)) if m.group(2) is not None else lo
        if hi < lo:
            raise UsageError(f"--seeds {text!r}: range {part} is empty")
        if hi - lo > 100_000:
            raise UsageError(f"--seeds {text!r}: at most 100,000 seeds")
        seeds.update(range(lo, hi + 1))
    return sorted(seeds)


def parse_sizes(text: str) -> tuple[int, ...]:
    """``8,64`` -> (8, 64): ensemble sizes, each at least 1 and at most 1,000,000."""
    parts = [p.strip() for p in text.split(",")]
    if not all(re.fullmatch(r"\d+", p) and 1 <= int(p) <= 1_000_000 for p in parts):
        raise UsageError(f"--sizes {text!r}: use ensemble sizes from 1 to 1,000,000, like 8,64")
    return tuple(int(p) for p in parts)


# ---- commands --------------------------------------------------------------------------------

def _config(args):
    from .config import load_config

    overrides = list(args.set)
    if getattr(args, "reshuffle", False):
        overrides.append("train.reshuffle=true")
    return load_config(args.config, overrides)


def cmd_train(args) -> int:
    config = _config(args)
    import torch  # noqa: F401  (after the config is known to be good)

    from .training import summarize, train, train_ensemble

    if args.threads:
        torch.set_num_threads(args.threads)
    if args.seeds is None:
        out = Path(args.out) if args.out else Path("runs") / config.name
        run = train(config, out, resume=args.resume, progress=not args.quiet)
        _print_run(run)
        return 0 if run.status == "done" else 1
    seeds = parse_seeds(args.seeds)
    out = Path(args.out) if args.out else Path("runs") / f"{config.name}-seeds"
    configs = [config.override([f"train.seed={s}"]) for s in seeds]
    runs = train_ensemble(configs, [out / f"seed-{s}" for s in seeds], resume=args.resume,
                          progress=not args.quiet)
    summary = summarize(runs)
    from .checkpoint import write_json

    write_json(out / "summary.json", summary)
    print(format_summary(summary, config.train.early_stop_acc))
    print(f"runs and summary.json in {out}")
    return 0 if all(r.status == "done" for r in runs) else 1


def _print_run(run) -> None:
    m = run.metrics
    how = {"early_stop": f"reached {run.config.train.early_stop_acc:g} at step {run.steps_to_threshold}",
           "max_steps": f"stopped at max_steps {run.step}",
           "non_finite": run.error}.get(run.stop_reason, run.status)
    print(f"{run.name}: {how}; val loss {m.get('loss', float('nan')):.4f} acc {m.get('acc', 0):.5f}"
          f" seq_acc {m.get('seq_acc', 0):.5f}; {run.wall_time_s:.1f} s")
    if run.run_dir is not None:
        print(f"run directory: {run.run_dir}")


def format_summary(summary: dict, threshold: float) -> str:
    lines = ["| seed | status | steps | steps to threshold | acc | seq_acc |",
             "|---:|---|---:|---:|---:|---:|"]
    for r in summary["rows"]:
        stt = r["steps_to_threshold"] if r["steps_to_threshold"] is not None else "-"
        acc = f"{r['acc']:.5f}" if r["acc"] is not None else "-"
        seq = f"{r['seq_acc']:.5f}" if r["seq_acc"] is not None else "-"
        lines.append(f"| {r['seed']} | {r['status']} | {r['steps']} | {stt} | {acc} | {seq} |")
    mean = summary["acc_mean"]
    med = summary["median_steps_to_threshold"]
    lines.append("")
    lines.append(f"{summary['n']} seeds: acc mean {mean:.5f} std {summary['acc_std']:.5f};"
                 f" {summary['frac_threshold']:.0%} reached {threshold:g}"
                 + (f" (median {med:g} steps)" if med is not None else ""))
    return "\n".join(lines)


def cmd_eval(args) -> int:
    from .checkpoint import load
    from .metrics import evaluate
    from .task import dataset

    model, config = load(args.path, args.set)
    metrics = evaluate(model, dataset(config))
    if args.json:
        print(json.dumps(metrics))
    else:
        print(f"{config.name}: val loss {metrics['loss']:.5f}  acc {metrics['acc']:.5f}"
              f"  seq_acc {metrics['seq_acc']:.5f}  n_val {metrics['n_val']}")
    return 0


def cmd_info(args) -> int:
    from .analysis import parameter_table
    from .checkpoint import load

    model, config = load(args.path, args.set)
    print(f"{config.name}")
    print(parameter_table(model).format())
    return 0


def cmd_export(args) -> int:
    from .checkpoint import export_seed, load

    model, config = load(args.path, args.set)
    export_seed(model.state_dict(), Path(args.out))
    print(f"wrote {args.out} ({config.name}, {len(model.state_dict())} tensors)")
    return 0


def parse_axis(text: str) -> tuple[str, list]:
    """``task.n_digits=10,20,50`` -> ("task.n_digits", [10, 20, 50])."""
    from .config import parse_value

    key, sep, values = text.partition("=")
    items = [v for v in values.split(",") if v.strip()]
    if not sep or not re.fullmatch(r"[a-z_]+\.[a-z_0-9]+", key.strip()) or not items:
        raise UsageError(f"--axis {text!r}: use section.key=v1,v2,... (e.g. task.n_digits=10,20)")
    return key.strip(), [parse_value(v) for v in items]


def cmd_frontier(args) -> int:
    from .frontier import format_frontier, search_frontier, sweep_evaluate

    overrides = list(args.set)
    if args.task:
        overrides.append(f"task.kind={args.task}")
    if args.threshold is not None:
        overrides.append(f"train.early_stop_acc={args.threshold}")
    from .config import load_config

    base = load_config(args.config, overrides)
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
    out = Path(args.out) if args.out else Path("runs") / f"frontier-{base.task.kind}"
    evaluate = sweep_evaluate(out, workers=args.workers, backend=args.backend,
                              address=args.address, progress=not args.quiet)
    points = search_frontier(base, axes, range(args.seeds), evaluate, d_max=args.d_max,
                             need=args.need)
    from .checkpoint import write_json

    write_json(out / "frontier.json", {
        "task": base.task.kind, "base": base.to_dict(), "axes": axes, "seeds": args.seeds,
        "need": args.need, "threshold": base.train.early_stop_acc, "d_max": args.d_max,
        "points": [p.to_dict() for p in points]})
    print(format_frontier(points, args.d_max))
    print(f"frontier.json and the sweep database in {out}")
    return 0


def cmd_bench(args) -> int:
    if args.steps < 100 or args.threads < 1:
        raise UsageError("--steps must be at least 100 and --threads at least 1")
    sizes = {} if args.sizes is None else {"sizes": parse_sizes(args.sizes)}
    from .bench import run_bench

    run_bench(threads=args.threads, steps=args.steps, as_json=args.json, device=args.device,
              log=sys.stderr, **sizes)
    return 0


# ---- parser ----------------------------------------------------------------------------------

def _add_config_args(p: argparse.ArgumentParser, config_file: bool = True) -> None:
    if config_file:
        p.add_argument("--config", metavar="FILE", help="TOML file with [task], [model], [train]")
    p.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="override one setting (repeatable), e.g. --set model.d_model=16")


def build_parser() -> argparse.ArgumentParser:
    from .config import DEVICES

    parser = argparse.ArgumentParser(
        prog="listcopy",
        description="Train and study attention-only transformers that copy a list through SEP.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("train", help="train a model (or many seeds at once)")
    _add_config_args(p)
    p.add_argument("--out", metavar="DIR", help="run directory (default runs/NAME)")
    p.add_argument("--seeds", metavar="SEEDS", help="train these seeds at once: 0-63 or 0,3,7")
    p.add_argument("--resume", action="store_true", help="continue from the latest checkpoint")
    p.add_argument("--reshuffle", action="store_true",
                   help="reshuffle every epoch (default: cycle the first epoch, as the seed)")
    p.add_argument("--threads", type=int, metavar="N", help="torch CPU threads")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("eval", help="validation loss, acc and seq_acc of a run or seed .pt")
    p.add_argument("path", help="run directory or seed .pt file")
    _add_config_args(p, config_file=False)
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("info", help="the parameter overview of a run or seed .pt")
    p.add_argument("path")
    _add_config_args(p, config_file=False)
    p.set_defaults(func=cmd_info)

    p = sub.add_parser("export", help="write a seed-format .pt (TransformerLens 3.x state dict)")
    p.add_argument("path")
    p.add_argument("--out", required=True, metavar="FILE.pt")
    _add_config_args(p, config_file=False)
    p.set_defaults(func=cmd_export)

    from .analysis.cli import add_parser as add_analyze_parser

    add_analyze_parser(sub)
    from .report.cli import add_parser as add_report_parser

    add_report_parser(sub)
    from .sweep.cli import add_parsers as add_sweep_parsers

    add_sweep_parsers(sub)

    p = sub.add_parser("frontier", help="capacity frontier: the smallest d_model that passes")
    _add_config_args(p)
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

    p = sub.add_parser("bench", help="training speed against a notebook-style loop")
    p.add_argument("--threads", type=int, default=1, metavar="N", help="torch threads (default 1)")
    p.add_argument("--steps", type=int, default=2000, metavar="N",
                   help="steps of each run (default 2000)")
    p.add_argument("--device", default="cpu", choices=DEVICES,
                   help="where to train (default cpu; auto: cuda, then mps, then cpu)")
    p.add_argument("--sizes", metavar="E1,E2",
                   help="ensemble sizes besides E=1 (default 8,64), e.g. 64,1024,8192 on a GPU")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_bench)
    return parser


def one_line(text: object) -> str:
    """Error text as one printable line (control characters from file names escaped)."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in str(text).strip())


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from .checkpoint import CheckpointError
    from .config import ConfigError

    try:
        return args.func(args)
    except (ConfigError, CheckpointError, UsageError) as err:
        print(f"listcopy {args.command}: error: {one_line(err)}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print(f"listcopy {args.command}: interrupted", file=sys.stderr)
        return 130
    except OSError as err:
        where = f": {err.filename}" if err.filename else ""
        print(f"listcopy {args.command}: error: {one_line(f'{err.strerror or err}{where}')}",
              file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
