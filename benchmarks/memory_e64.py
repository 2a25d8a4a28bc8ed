"""Peak memory of an E = 64 CPU training run of the default model.

    python benchmarks/memory_e64.py [--steps 5000] [--threads 1] [--members 64]

How: the run (``train_ensemble`` of seeds 0..63, the real code path of ``listcopy train --seeds
0-63``, early stop off so all 64 members train throughout) happens in a child process; the peak
resident set size is that child's ``resource.getrusage(RUSAGE_CHILDREN).ru_maxrss`` (kilobytes on
Linux), read by this parent once the child has exited: the whole process, Python, torch and
TransformerLens imports included. The child also reports its RSS before training (imports, data)
so the training's own share shows.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys

CHILD = r"""
import json, resource, sys, time
import torch
torch.set_num_threads({threads})
from listcopy.config import Config
from listcopy.training import train_ensemble
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
configs = [Config().override([f"train.seed={{s}}", "train.max_steps={steps}",
                              "train.early_stop_acc=1.0", "train.device=cpu"])
           for s in range({members})]
start = time.perf_counter()
runs = train_ensemble(configs, progress=False)
print(json.dumps({{"seconds": time.perf_counter() - start, "rss_before_kb": before,
                  "acc_mean": sum(r.metrics["acc"] for r in runs) / len(runs)}}))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=5000)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--members", type=int, default=64)
    args = parser.parse_args()
    code = CHILD.format(threads=args.threads, steps=args.steps, members=args.members)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    child = json.loads(proc.stdout.strip().splitlines()[-1])
    peak_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    result = {"members": args.members, "steps": args.steps, "threads": args.threads,
              "peak_rss_mb": round(peak_kb / 1024, 1),
              "rss_before_training_mb": round(child["rss_before_kb"] / 1024, 1),
              "seconds": round(child["seconds"], 2), "acc_mean": round(child["acc_mean"], 4)}
    print(json.dumps(result))


if __name__ == "__main__":
    main()
