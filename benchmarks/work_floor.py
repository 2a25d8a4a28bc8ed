"""The floor of a sweep's training work, its evaluations included: every model-step it took,
at the engine's FLOP count (the kernel's, rows no output needs pruned), at this machine's
one-core matrix-product rate, on N cores.

    python benchmarks/work_floor.py SWEEP_DIR [SWEEP_DIR ...] [--cores 2]
    python benchmarks/work_floor.py --sort-frontier [--cores 2]

A sweep's finished runs give their own steps. ``--sort-frontier`` takes the search of
docs/frontier.md's sort row instead (its runs were not kept): per width, the seeds that failed ran
300,000 steps, and those that passed are counted at the fewest steps the doc reports for any of
them (18,600 from d_model 52 to 56, 19,200 at 64), so its figure is a lower bound. Either way the
floor is what no engine on these cores can beat: a target below it asks for less work, not for
faster code. Prints one line per shape and the total; one thread (torch.set_num_threads(1)).
"""

from __future__ import annotations

import argparse
import sys
from collections import defaultdict

import torch

from listcopy.bench_shapes import engine_flops_per_step, floor_rate
from listcopy.config import Config
from listcopy.sweep.results import load_rows

FRONTIER_STEPS = 300_000
# docs/frontier.md, sort: d_model -> (seeds that failed, steps of each seed that passed)
SORT_SEARCH = {1: (8, ()), 2: (8, ()), 4: (8, ()), 8: (8, ()), 16: (8, ()), 32: (8, ()),
               48: (8, ()), 52: (6, (18_600,) * 2), 54: (6, (18_600,) * 2),
               55: (5, (18_600,) * 3), 56: (4, (18_600,) * 4), 64: (1, (19_200,) * 7)}


def sweep_work(dirs: list[str]) -> dict[str, tuple[Config, float]]:
    """Per run name: its config and the model-steps its finished runs took."""
    configs: dict[str, Config] = {}
    steps: dict[str, float] = defaultdict(float)
    seen: set[tuple[str, str]] = set()  # entries that share a run: its steps once
    for d in dirs:
        for row in load_rows(d):
            if row["status"] == "done" and row["steps"] and (d, row["run_dir"]) not in seen:
                seen.add((d, row["run_dir"]))
                configs[row["name"]] = row["config"]
                steps[row["name"]] += row["steps"]
    return {name: (config, steps[name]) for name, config in configs.items()}


def sort_frontier_work() -> dict[str, tuple[Config, float]]:
    out = {}
    for d, (failed, passed) in SORT_SEARCH.items():
        config = Config().override([f"model.d_model={d}", "task.kind=sort"])
        out[f"sort d_model {d}"] = (config, failed * FRONTIER_STEPS + sum(passed))
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("dirs", nargs="*", help="sweep output directories")
    p.add_argument("--sort-frontier", action="store_true",
                   help="docs/frontier.md's sort search instead of a sweep")
    p.add_argument("--cores", type=int, default=2)
    args = p.parse_args(argv)
    if bool(args.dirs) == args.sort_frontier or args.cores < 1:
        p.error("give sweep directories or --sort-frontier (not both), and --cores >= 1")
    torch.set_num_threads(1)
    work = sort_frontier_work() if args.sort_frontier else sweep_work(args.dirs)
    rate = floor_rate()
    total = 0.0
    for name, (config, model_steps) in work.items():
        flops = engine_flops_per_step(config)[0]
        total += flops * model_steps
        print(f"{name:<24} {flops / 1e6:8.1f} MFLOP/model-step x {model_steps:>11,.0f} "
              f"model-steps = {flops * model_steps / 1e12:7.1f} TFLOP")
    minutes = total / rate / args.cores / 60
    print(f"all: {total / 1e12:.1f} TFLOP; one core's matrix-product rate {rate / 1e9:.1f} GFLOP/s "
          "(the faster of torch's sgemm and the compiled product, one thread); "
          f"floor on {args.cores} cores: {minutes:.1f} min")
    return 0


if __name__ == "__main__":
    sys.exit(main())
