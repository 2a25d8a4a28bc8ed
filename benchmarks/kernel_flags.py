"""What LayerNorm and biases cost the CPU kernel itself: training steps only (``Ensemble.train_steps``,
no evaluation, no set-up), the flag sets interleaved and repeated, each its fastest repeat.

    python benchmarks/kernel_flags.py [--d-model 64] [--members 8] [--steps 30] [--repeats 12]

Prints ms per model-step, the kernel's FLOPs per model-step and the ratio to the floor at one core's
sgemm rate (measured after the runs); one thread (torch.set_num_threads(1)).
"""

from __future__ import annotations

import argparse
import sys
import time

import torch

from listcopy.bench_shapes import sgemm_rate, shape_config
from listcopy.engine import Ensemble
from listcopy.model import build_model
from listcopy.task import dataset

FLAGS = {"seed": {}, "ln": {"ln": True}, "bias": {"use_bias": True},
         "ln_bias": {"ln": True, "use_bias": True}}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--d-model", type=int, default=64)
    p.add_argument("--members", type=int, default=8)
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--repeats", type=int, default=12)
    args = p.parse_args(argv)
    if min(args.d_model, args.members, args.steps, args.repeats) < 1:
        p.error("every option must be at least 1")
    torch.set_num_threads(1)
    E, S = args.members, args.steps
    ensembles = {}
    for name, flags in FLAGS.items():
        config = shape_config(args.d_model, flags)
        weights = [build_model(config, torch.Generator().manual_seed(s), hooks=False).state_dict()
                   for s in range(E)]
        ensembles[name] = Ensemble(config, weights, "cpu")
    data = dataset(ensembles["seed"].config)  # the task's lists: SEP and the outputs constant
    inputs, targets = data.train_inputs, data.train_targets[:, data.task.list_len + 1:].contiguous()
    g = torch.Generator().manual_seed(0)
    batches = torch.randint(0, inputs.shape[0], (E, 8, 128), generator=g)

    def ms_per_model_step(ens: Ensemble) -> float:
        lr, wd = torch.full((E,), 1e-3, dtype=torch.float64), torch.full((E,), 0.01, dtype=torch.float64)
        start = time.perf_counter()
        ens.train_steps(inputs, targets, batches, 0, S, lr, wd, torch.ones(E, dtype=torch.bool),
                        torch.zeros(E, dtype=torch.float64))
        return (time.perf_counter() - start) / S / E * 1e3

    for ens in ensembles.values():
        ms_per_model_step(ens)  # warm-up
    best = dict.fromkeys(FLAGS, float("inf"))
    for _ in range(args.repeats):
        for name in FLAGS:
            best[name] = min(best[name], ms_per_model_step(ensembles[name]))
    rate = sgemm_rate()["wall"]
    print(f"d_model {args.d_model}, {E} members, {S} steps x {args.repeats} repeats, one thread; "
          f"one core's sgemm {rate / 1e9:.1f} GFLOP/s")
    for name, ens in ensembles.items():
        flops = ens.kernel_shape().flops_per_step(128)
        print(f"{name:<8} {ens.backend:<7} {best[name]:7.3f} ms/model-step  {flops / 1e6:6.1f} MFLOP  "
              f"{best[name] / (flops / rate * 1e3):.2f}x floor")
    return 0


if __name__ == "__main__":
    sys.exit(main())
