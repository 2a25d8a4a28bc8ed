"""What ``train_ensemble`` spends around its training loop for E members, phase by phase.

    python benchmarks/ensemble_setup.py [--members 8192] [--device cpu] [--repeats 3]

The phases of ``train_ensemble`` before its first step and after its last, each timed alone (the
fastest of ``--repeats``), on the default config: the configs' check, each member's draws (its
generator replayed past the split, the initial weights, its batch order), the ensemble built on
the device, the members' batch orders stacked, and the weights copied back as state dicts. At
E = 8192 on an H200 these made a fifth of a 2000-step ``listcopy bench`` run (the JSON's
``seconds`` against ``loop_seconds``). One thread (torch.set_num_threads(1)).
"""

from __future__ import annotations

import argparse
import sys
import time

import torch

from listcopy.config import Config, check_ensemble
from listcopy.engine import Ensemble
from listcopy.model import InitialState, ListCopyCore
from listcopy.task import dataset
from listcopy.training import prepare_members, resolve_device


def phases(members: int, device: torch.device) -> dict[str, float]:
    """Seconds of each phase, once."""
    base = Config()  # one base, as `listcopy train --seeds` overrides one config per seed
    configs = [base.override([f"train.seed={s}"]) for s in range(members)]
    out, clock = {}, time.perf_counter

    def timed(name, fn):
        start = clock()
        value = fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        out[name] = clock() - start
        return value

    timed("check configs", lambda: check_ensemble(configs))
    data = timed("dataset to device", lambda: dataset(configs[0]).to(device))
    initial = InitialState(ListCopyCore(configs[0]))
    drawn = timed("members drawn", lambda: prepare_members(configs, [None] * members, False,
                                                           initial, data))
    ens = timed("ensemble built", lambda: Ensemble(configs[0], [m.run.state for m in drawn],
                                                    device))
    timed("batch orders stacked", lambda: torch.stack(
        [m.source.batches(0) for m in drawn]).to(device))
    timed("state dicts back", lambda: ens.state_dicts(list(range(members))))
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--members", type=int, default=8192)
    p.add_argument("--device", default="cpu", choices=("cpu", "cuda", "mps"))
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args(argv)
    if args.members < 1 or args.repeats < 1:
        p.error("--members and --repeats must be at least 1")
    torch.set_num_threads(1)
    device = resolve_device(args.device)
    best: dict[str, float] = {}
    for _ in range(args.repeats):
        for name, seconds in phases(args.members, device).items():
            best[name] = min(best.get(name, seconds), seconds)
    print(f"E={args.members} on {device}, one thread, fastest of {args.repeats}:")
    for name, seconds in best.items():
        print(f"  {name:<22}{seconds:8.3f} s  {seconds / args.members * 1e6:8.1f} us/member")
    print(f"  {'total':<22}{sum(best.values()):8.3f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
