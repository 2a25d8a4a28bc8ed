"""``listcopy bench``: training speed of the engine against the notebook's loop."""

from __future__ import annotations

import argparse
import re
import sys

from ..config import DEVICES
from .args import UsageError, check_threads


def register(subparsers) -> None:
    p = subparsers.add_parser("bench", help="training speed against a notebook-style loop")
    p.add_argument("--threads", type=int, default=1, metavar="N", help="torch threads (default 1)")
    p.add_argument("--steps", type=int, default=2000, metavar="N",
                   help="steps of each run (default 2000)")
    p.add_argument("--device", default="cpu", choices=DEVICES,
                   help="where to train (default cpu; auto: cuda, then mps, then cpu)")
    p.add_argument("--sizes", metavar="E1,E2",
                   help="ensemble sizes besides E=1 (default 8,64), e.g. 64,1024,8192 on a GPU")
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
    from ..bench import run_bench

    run_bench(threads=args.threads, steps=args.steps, as_json=args.json, device=args.device,
              log=sys.stderr, **sizes)
    return 0


def parse_sizes(text: str) -> tuple[int, ...]:
    """``8,64`` -> (8, 64): ensemble sizes, each at least 1 and at most 1,000,000."""
    parts = [p.strip() for p in text.split(",")]
    if not all(re.fullmatch(r"\d+", p) and 1 <= int(p) <= 1_000_000 for p in parts):
        raise UsageError(f"--sizes {text!r}: use ensemble sizes from 1 to 1,000,000, like 8,64")
    return tuple(int(p) for p in parts)
