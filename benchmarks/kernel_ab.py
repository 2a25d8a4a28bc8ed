"""Versions of kernel.c against each other, or flag sets against each other, in one process:
training steps only (``Ensemble.train_steps`` on fixed batches, no evaluation, no set-up), the runs
interleaved and repeated, each its fastest repeat. How the old-against-new figures and the cost of
LayerNorm and biases in benchmarks/README.md were measured:

    git show REV:src/listcopy/engine/kernel.c > /tmp/old.c
    python benchmarks/kernel_ab.py /tmp/old.c src/listcopy/engine/kernel.c --d-model 64 \\
        --flags learned_vo --members 4 --steps 100 --repeats 3
    python benchmarks/kernel_ab.py src/listcopy/engine/kernel.c --flags seed,ln,bias,ln-bias \\
        --members 8 --steps 30 --repeats 12

``--eval`` times the evaluation of the validation split (``Ensemble.evaluate``: the forward pass,
loss and hits) instead of training steps, per sequence and member.

``--flags`` takes the names of ``listcopy bench --shapes`` (seed, ln_bias, learned_vo, all, heads2)
and of its ``--all-flags`` combinations (ln, bias, wv, wo, h2 joined by "-"). Every version is built
for each flag set's shape header (this checkout's kernel.py, this CPU's lanes). Prints ms per
model-step, the kernel's FLOPs per model-step and the ratio to the floor at one core's
matrix-product rate (bench_shapes.floor_rate, measured after the runs); one thread
(torch.set_num_threads(1)).
"""

from __future__ import annotations

import argparse
import ctypes
import sys
import tempfile
import time
from pathlib import Path

import torch

from listcopy.bench_shapes import FLAG_SETS, all_flag_sets, floor_rate, shape_config
from listcopy.config import Config
from listcopy.engine import Ensemble, kernel_build
from listcopy.engine.kernel import Kernel
from listcopy.model import build_model
from listcopy.task import dataset


def stretch(config: Config, members: int, steps: int) -> tuple:
    """``train_steps``' arguments: ``steps`` steps of each member over its own random batches
    (as many as one pass over the training rows holds, taken in turn)."""
    data = dataset(config)
    L = config.task.list_len
    g = torch.Generator().manual_seed(0)
    n, B = data.train_inputs.shape[0], config.train.batch_size
    k = min(steps, n // B)
    batches = torch.stack([torch.randperm(n, generator=g)[:k * B].view(k, B)
                           for _ in range(members)])
    lr = torch.full((members,), config.train.lr, dtype=torch.float64)
    wd = torch.full((members,), config.train.weight_decay, dtype=torch.float64)
    return (data.train_inputs, data.train_targets[:, L + 1:].contiguous(), batches, 0, steps,
            lr, wd, torch.ones(members, dtype=torch.bool), torch.zeros(members, dtype=torch.float64))


def ensembles(config: Config, members: int, sources: list[Path], tmp: Path,
              name: str) -> list[Ensemble]:
    """One ensemble of ``members`` seeds per kernel version, each built for this config's shape."""
    sds = [build_model(config, torch.Generator().manual_seed(s), hooks=False).state_dict()
           for s in range(members)]
    out = []
    for source in sources:
        ens = Ensemble(config, sds, "cpu")
        if ens.backend != "kernel":
            raise SystemExit(f"kernel_ab: {name}: the kernel does not train this shape")
        where = Path(tempfile.mkdtemp(dir=tmp))
        header = ens._backend.shape.header(kernel_build.lanes())
        built = kernel_build.build(header, "cc", where, source.resolve())
        ens._backend.kernel = Kernel(ctypes.CDLL(str(built)), ens._backend.shape)
        out.append(ens)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("sources", nargs="+", type=Path, help="kernel.c versions")
    p.add_argument("--d-model", type=int, default=64)
    p.add_argument("--flags", default="seed", help="flag sets, comma-separated (default seed)")
    p.add_argument("--members", type=int, default=4)
    p.add_argument("--steps", type=int, default=100)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--eval", action="store_true",
                   help="time the validation split's evaluation instead of training steps")
    p.add_argument("--call-flops", default=None,
                   help="bounds on a call's work per thread, comma-separated (default the backend's)")
    args = p.parse_args(argv)
    if min(args.d_model, args.members, args.steps, args.repeats) < 1:
        p.error("--d-model, --members, --steps and --repeats must be at least 1")
    missing = [str(s) for s in args.sources if not s.is_file()]
    try:
        bounds = [None] if args.call_flops is None else [
            float(c) for c in args.call_flops.split(",")]
    except ValueError:
        p.error(f"--call-flops: not numbers: {args.call_flops}")
    if any(b is not None and not b > 0 for b in bounds):
        p.error("--call-flops must be positive")
    known = {**all_flag_sets(), **FLAG_SETS}
    names = [n.strip() for n in args.flags.split(",")]
    unknown = [n for n in names if n not in known]
    if missing or unknown:
        why = (f"no such file: {', '.join(missing)}" if missing else
               f"unknown flag set(s) {', '.join(unknown)}; known: {', '.join(known)}")
        print(f"kernel_ab: {why}", file=sys.stderr)
        return 2
    torch.set_num_threads(1)
    runs = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in names:
            config = shape_config(args.d_model, known[name])
            steps = stretch(config, args.members, args.steps)
            work = validation(config) if args.eval else steps
            for source, ens in zip(args.sources, ensembles(config, args.members, args.sources,
                                                           Path(tmp), name)):
                ens.train_steps(*steps)  # warm-up (and, for --eval, trained weights to evaluate)
                for bound in bounds:
                    runs[name, source, bound] = (ens, work)
        best = dict.fromkeys(runs, float("inf"))
        for _ in range(args.repeats):
            for key, (ens, work) in runs.items():
                if key[2] is not None:
                    ens._backend.call_flops = key[2]
                start = time.perf_counter()
                (ens.evaluate if args.eval else ens.train_steps)(*work)
                best[key] = min(best[key], time.perf_counter() - start)
    rate = floor_rate()
    what = "the validation split's evaluation" if args.eval else f"{args.steps} steps"
    print(f"d_model {args.d_model}, E={args.members}, {what}, one thread, fastest of "
          f"{args.repeats}; one core's matrix-product rate {rate / 1e9:.1f} GFLOP/s")
    for (name, source, bound), (ens, work) in runs.items():
        shape = ens.kernel_shape()
        if args.eval:  # microseconds per sequence and member
            n, flops, unit = work[0].shape[0], shape.flops_per_sequence(), "us/seq"
        else:  # milliseconds per model-step
            n, flops, unit = args.steps, shape.flops_per_step(ens.config.batch_size), "ms/model-step"
        seconds = best[name, source, bound] / n / args.members
        calls = "" if bound is None else f"  call_flops {bound:.0e}"
        print(f"  {name:<10} {str(source):<40}{calls} {seconds * (1e6 if args.eval else 1e3):8.4f} "
              f"{unit}  {flops / 1e6:6.3f} MFLOP  {seconds * rate / flops:.2f}x floor")
    return 0


def validation(config: Config) -> tuple:
    """``Ensemble.evaluate``'s arguments: the validation split's inputs and targets."""
    data = dataset(config)
    return data.val_inputs, data.val_targets


if __name__ == "__main__":
    sys.exit(main())
