"""Two or more versions of kernel.c against each other in one process: training steps only
(``Ensemble.train_steps`` on fixed batches, no evaluation, no set-up), the versions interleaved and
repeated, each its fastest repeat. How the old-against-new figures in benchmarks/README.md were
measured:

    git show REV:src/listcopy/engine/kernel.c > /tmp/old.c
    python benchmarks/kernel_ab.py /tmp/old.c src/listcopy/engine/kernel.c --d-model 64 \\
        --flags learned_vo --members 4 --steps 100 --repeats 3

Every version is built for the same shape header (this checkout's kernel.py, this CPU's lanes).
Prints ms per model-step per version; one thread (torch.set_num_threads(1)).
"""

from __future__ import annotations

import argparse
import ctypes
import sys
import tempfile
import time
from pathlib import Path

import torch

from listcopy.bench_shapes import FLAG_SETS, shape_config
from listcopy.engine import Ensemble, kernel_build
from listcopy.engine.kernel import Kernel
from listcopy.model import build_model
from listcopy.task import dataset


def stretch(config, members: int, steps: int) -> tuple:
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


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("sources", nargs="+", type=Path, help="kernel.c versions")
    p.add_argument("--d-model", type=int, default=64)
    p.add_argument("--flags", choices=sorted(FLAG_SETS), default="seed")
    p.add_argument("--members", type=int, default=4)
    p.add_argument("--steps", type=int, default=100)
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args(argv)
    missing = [str(s) for s in args.sources if not s.is_file()]
    if missing:
        print(f"kernel_ab: no such file: {', '.join(missing)}", file=sys.stderr)
        return 2
    torch.set_num_threads(1)
    config = shape_config(args.d_model, FLAG_SETS[args.flags])
    sds = [build_model(config, torch.Generator().manual_seed(s), hooks=False).state_dict()
           for s in range(args.members)]
    shape = Ensemble(config, sds)._backend.shape
    header = shape.header(kernel_build.lanes())
    with tempfile.TemporaryDirectory() as tmp:
        kernels = []
        for i, source in enumerate(args.sources):
            (Path(tmp) / str(i)).mkdir()
            built = kernel_build.build(header, "cc", Path(tmp) / str(i), source.resolve())
            kernels.append(Kernel(ctypes.CDLL(str(built)), shape))
        best = [float("inf")] * len(kernels)
        work = stretch(config, args.members, args.steps)
        for _ in range(args.repeats):
            for i, kernel in enumerate(kernels):
                ens = Ensemble(config, sds)
                ens._backend.kernel = kernel
                ens.train_steps(*work)  # warm-up
                start = time.perf_counter()
                ens.train_steps(*work)
                best[i] = min(best[i], time.perf_counter() - start)
    print(f"d_model {args.d_model}, {args.flags}, E={args.members}, {args.steps} steps, one thread, "
          f"fastest of {args.repeats}")
    for source, seconds in zip(args.sources, best):
        print(f"  {source}: {seconds / args.steps / args.members * 1e3:.4f} ms/model-step")
    return 0


if __name__ == "__main__":
    sys.exit(main())
