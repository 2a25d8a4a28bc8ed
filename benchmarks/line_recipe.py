"""The research line's recipe (examples/line_recipe.toml: 2 layers, d_model 64, batch 2048,
warmup + cosine, clipping) over several seeds at once: each seed's final accuracy and the time.

    python benchmarks/line_recipe.py --seeds 0-7 --steps 3000 --threads 2 [--json out.json]

``--steps`` shortens the schedule (max_steps: the cosine decays over it, as train.py's
--max-steps does); the rest is the example file's. Prints one row per seed and the fraction of
seeds at or above 0.9; all of it goes through ``listcopy.training.train_ensemble``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "line_recipe.toml"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", default="0-7")
    p.add_argument("--steps", type=int, default=3000)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--set", action="append", default=[], help="more overrides, section.key=value")
    p.add_argument("--json", type=Path, help="write the figures here")
    args = p.parse_args()

    import torch

    from listcopy.config import load_config, parse_seeds
    from listcopy.training import summarize, train_ensemble

    torch.set_num_threads(args.threads)
    base = load_config(EXAMPLE, [f"train.max_steps={args.steps}", "train.device=cpu", *args.set])
    seeds = parse_seeds(args.seeds)
    configs = [base.override([f"train.seed={s}"]) for s in seeds]
    t0 = time.perf_counter()
    runs = train_ensemble(configs, progress=False)
    seconds = time.perf_counter() - t0
    summary = summarize(runs)
    reached = sum(r.metrics["acc"] >= 0.9 for r in runs)
    print("| seed | steps | stop | final acc | best acc |\n|---:|---:|---|---:|---:|")
    for r in runs:
        best = max(h["acc"] for h in r.history)
        print(f"| {r.config.train.seed} | {r.step} | {r.stop_reason} | {r.metrics['acc']:.5f}"
              f" | {best:.5f} |")
    print(f"\n{reached} of {len(runs)} seeds at or above 0.9; {seconds:.0f} s for {len(runs)} seeds"
          f" ({1000 * seconds / max(r.step for r in runs):.0f} ms per ensemble step,"
          f" {args.threads} thread(s))")
    if args.json:
        args.json.write_text(json.dumps({"seeds": list(seeds), "steps": args.steps,
                                         "threads": args.threads, "seconds": seconds,
                                         "reached_0.9": reached, "summary": summary,
                                         "config": base.to_dict()}, indent=1))


if __name__ == "__main__":
    main()
