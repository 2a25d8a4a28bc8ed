"""Per width, an accelerator's training step against the CPU's: the rows of devices.CROSSOVERS.

    python benchmarks/device_widths.py [--device cuda] [--widths 8,32,64,128] [--sizes 1,64,1024]
                                       [--steps 1000] [--cpu-steps 200] [--cpu-members 16]
                                       [--threads 1]

For each d_model (3 layers, the seed's flags otherwise), ``train_ensemble`` of E seeds at once
(early stop off, every step taken) on the accelerator for each E of ``--sizes``, and on the CPU
(``--threads`` torch threads; the kernel where it applies) for ``--cpu-members`` seeds. Each
run's training loop alone is timed (its longest member's ``wall_time_s``: steps and
evaluations, CUDA graph capture included, not drawing the models or copying them back), after a
20-step warm-up run of the same shape (CUDA context, cuBLAS, the kernel's build). Printed, as
JSON: ms per step and per model-step of each run, and per width the crossover, the fewest
models at once from which the accelerator's step (its E = 1 step, launch-bound) beats that many
CPU model-steps: ceil(gpu_ms / cpu_ms), per CPU thread as devices.py's table counts it.
"""

from __future__ import annotations

import argparse
import json
import math

import torch

from listcopy.bench import engine_model_steps
from listcopy.bench_shapes import shape_config


def loop_ms(config, steps: int, members: int, device: str) -> dict:
    engine_model_steps(config, 20, members, device)  # warm-up, same shape
    run = engine_model_steps(config, steps, members, device)
    ms = run.loop_seconds / steps * 1e3
    return {"members": members, "steps": steps, "ms_per_step": ms,
            "ms_per_model_step": ms / members, "whole_s": run.seconds, "loop_s": run.loop_seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cuda", choices=("cuda", "mps", "cpu"))
    parser.add_argument("--widths", default="8,32,64,128")
    parser.add_argument("--sizes", default="1,64,1024")
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--cpu-steps", type=int, default=200)
    parser.add_argument("--cpu-members", type=int, default=16)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    sizes = [int(s) for s in args.sizes.split(",")]
    out = {"device": args.device, "threads": args.threads, "torch": torch.__version__,
           "gpu": torch.cuda.get_device_name() if args.device == "cuda" else None, "widths": []}
    for d_model in (int(w) for w in args.widths.split(",")):
        config = shape_config(d_model, {})
        accel = [loop_ms(config, args.steps, n, args.device) for n in sizes]
        cpu = loop_ms(config, args.cpu_steps, args.cpu_members, "cpu")
        one = accel[0]["ms_per_step"]
        row = {"d_model": d_model, "accelerator": accel, "cpu": cpu,
               "crossover_per_thread": math.ceil(one / cpu["ms_per_model_step"] / args.threads)}
        out["widths"].append(row)
        print(json.dumps(row), flush=True)
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
