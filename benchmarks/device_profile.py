"""Where a large ensemble's training step goes on a GPU: torch.profiler's kernels, eager steps.

    python benchmarks/device_profile.py [--device cuda] [--members 8192] [--steps 5] [--top 25]

E default models (seeds 0..E-1) on the device, the torch backend's eager steps (a CUDA graph
replays the same kernels but hides their names from the profiler), a warm-up stretch and then
``--steps`` profiled steps; printed: the ``--top`` kernels by device time (CPU time on the CPU),
then the graphed stretch's ms per step of the same ensemble for comparison.
"""

from __future__ import annotations

import argparse
import time

import torch
from torch.profiler import ProfilerActivity, profile

from listcopy.config import Config
from listcopy.engine import Ensemble
from listcopy.model import build_model
from listcopy.task import Dataset, dataset


def stretch_args(config: Config, data: Dataset, E: int, n_steps: int) -> tuple:
    """``Ensemble.train_steps``' arguments on ``data``'s device (made before any timing: the
    profile once counted the dataset's copy to the GPU as a sixth of its device time)."""
    device, L = data.train_inputs.device, config.task.list_len
    g = torch.Generator().manual_seed(0)
    n_train = data.train_inputs.shape[0]
    batches = torch.randint(0, n_train, (E, 8, config.batch_size), generator=g).to(device)
    lr = torch.full((E, n_steps), 1e-3, dtype=torch.float64, device=device)
    return (data.train_inputs, data.train_targets[:, L + 1:].contiguous(), batches, 0, n_steps, lr,
            torch.full((E,), 0.01, dtype=torch.float64, device=device),
            torch.ones(E, dtype=torch.bool, device=device),
            torch.zeros(E, dtype=torch.float64, device=device))


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cuda", choices=("cuda", "mps", "cpu"))
    parser.add_argument("--members", type=int, default=8192)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--top", type=int, default=25)
    args = parser.parse_args()
    torch.set_num_threads(1)
    device, config = torch.device(args.device), Config()
    sds = [build_model(config.override([f"train.seed={s}"]), hooks=False).state_dict()
           for s in range(min(args.members, 64))]
    sds = [sds[e % len(sds)] for e in range(args.members)]  # the weights don't change the work
    ens = Ensemble(config, sds, device, backend="torch")
    eager = getattr(ens._backend, "inner", ens._backend)
    graphed, ens._backend = ens._backend, eager
    data = dataset(config).to(device)
    ens.train_steps(*stretch_args(config, data, args.members, 2))  # warm-up
    profiled = stretch_args(config, data, args.members, args.steps)
    sync(device)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=activities) as prof:
        ens.train_steps(*profiled)
        sync(device)
    key = "self_device_time_total" if device.type == "cuda" else "self_cpu_time_total"
    print(prof.key_averages().table(sort_by=key, row_limit=args.top, max_name_column_width=60))
    for name, backend in (("eager", eager), ("graphed", graphed)):
        ens._backend = backend
        ens.train_steps(*stretch_args(config, data, args.members, 20))  # capture / warm-up
        timed = stretch_args(config, data, args.members, 20)
        sync(device)
        start = time.perf_counter()
        ens.train_steps(*timed)
        sync(device)
        print(f"{name}: {(time.perf_counter() - start) / 20 * 1e3:.3f} ms/step at E={args.members}")


if __name__ == "__main__":
    main()
