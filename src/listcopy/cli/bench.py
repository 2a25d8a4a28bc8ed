"""``listcopy bench``: training speed of the engine against the notebook's loop (the default
config, or ``--shapes``: per width and flag set, with FLOPs and the matrix-product floor)."""

from __future__ import annotations

import argparse
import re
import sys

from ..config import DEVICES
from .args import UsageError, add_command, check_threads


def register(subparsers) -> None:
    p = add_command(subparsers, "bench", "training speed against a notebook-style loop")
    p.add_argument("--threads", type=int, default=1, metavar="N", help="torch threads (default 1)")
    p.add_argument("--steps", type=int, default=2000, metavar="N",
                   help="steps of each run (default 2000; with --shapes: the most per run)")
    p.add_argument("--device", default="cpu", choices=DEVICES,
                   help="where to train (default cpu; auto: cuda, then mps, then cpu)")
    p.add_argument("--sizes", metavar="E1,E2",
                   help="ensemble sizes besides E=1 (default 8,64), e.g. 64,1024,8192 on a GPU")
    p.add_argument("--shapes", nargs="?", const="8,32,64,128", metavar="D1,D2",
                   help="per shape: these d_models (default 8,32,64,128) x flag sets, on the CPU, "
                        "with FLOPs, the sgemm floor and each run's ratio to it")
    p.add_argument("--all-flags", action="store_true",
                   help="with --shapes: all 32 flag combinations, not the representative five")
    p.add_argument("--flags", metavar="NAME,NAME",
                   help="with --shapes: only these flag sets (seed, ln_bias, learned_vo, all, "
                        "heads2; with --all-flags their combinations' names, like ln-bias-wv)")
    p.add_argument("--layers", type=int, metavar="N", help="with --shapes: n_layers (default 3)")
    p.add_argument("--repeat", type=int, default=1, metavar="N",
                   help="with --shapes: run each N times, interleaved, and keep the fastest "
                        "(load from other jobs falls on all runs alike)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_bench)


def cmd_bench(args: argparse.Namespace) -> int:
    if args.steps < 100 or args.threads < 1:
        raise UsageError("--steps must be at least 100 and --threads at least 1")
    check_threads(args.threads)
    sizes = {} if args.sizes is None else {"sizes": parse_sizes(args.sizes)}
    from ..config import Config
    from ..resources import Limits, check_device, guard_training

    check_device(args.device, "--device")
    largest = max(sizes.get("sizes", (64,)))  # the default sizes are 1, 8 and 64
    guard_training(Config().override([f"train.device={args.device}"]), largest, Limits())
    if args.shapes is not None:
        return _bench_shapes(args, sizes)
    if args.all_flags or args.flags is not None or args.repeat != 1 or args.layers is not None:
        raise UsageError("--all-flags, --flags, --layers and --repeat go with --shapes")
    from ..bench import run_bench

    run_bench(threads=args.threads, steps=args.steps, as_json=args.json, device=args.device,
              log=sys.stderr, **sizes)
    return 0


def _bench_shapes(args: argparse.Namespace, sizes: dict) -> int:
    layers = 3 if args.layers is None else args.layers
    widths = parse_sizes(args.shapes, "--shapes", "widths from 1 to 512, like 8,32,64,128", 512)
    if args.device != "cpu" or layers < 1 or not 1 <= args.repeat <= 100:
        raise UsageError("--shapes measures the CPU (--device cpu) with --layers >= 1 and "
                         "--repeat from 1 to 100")
    import json

    import torch

    from ..bench_shapes import chosen_flag_sets, format_shapes, run_shapes

    try:
        flag_sets = chosen_flag_sets(args.flags, args.all_flags)
    except KeyError as err:
        raise UsageError(f"--flags {args.flags!r}: {err.args[0]}") from None
    torch.set_num_threads(args.threads)
    result = run_shapes(widths, flag_sets, (1, *sizes.get("sizes", (64,))), layers,
                        log=sys.stderr, most_steps=args.steps, repeat=args.repeat)
    print(json.dumps(result, indent=1) if args.json else format_shapes(result))
    return 0


def parse_sizes(text: str, option: str = "--sizes",
                what: str = "ensemble sizes from 1 to 1,000,000, like 8,64",
                most: int = 1_000_000) -> tuple[int, ...]:
    """``8,64`` -> (8, 64): positive integers (ensemble sizes, at most 1,000,000), each at most
    ``most``."""
    parts = [p.strip() for p in text.split(",")]
    if not all(re.fullmatch(r"\d+", p) and 1 <= int(p) <= most for p in parts):
        raise UsageError(f"{option} {text!r}: use {what}")
    return tuple(int(p) for p in parts)
