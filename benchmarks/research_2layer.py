"""The research line's 2-layer d_model 64 model trained with ``listcopy train`` until some seed
reaches a validation accuracy (issue 14: at least 0.9; the paper's model: 92.2%).

    .venv/bin/python benchmarks/research_2layer.py [--seeds 0-3] [--stages 20000,40000,60000]
        [--target 0.9] [--reshuffle] [--out DIR] [--threads 1]

Runs, as child processes, the paper's recipe (examples/paper_2layer.toml) for all seeds at once:

    listcopy train --config examples/paper_2layer.toml --seeds 0-3 [--reshuffle] \
        --set train.max_steps=20000 --set train.eval_every=1000 \
        --set train.checkpoint_every=100000 --set train.device=cpu --out DIR

then, for each further stage, the same command with ``--resume`` and the stage's max_steps (a
resumed run ends with the weights of an uninterrupted one), stopping after the first stage at
which some seed's validation accuracy is at least ``--target``. An existing DIR is resumed from
where it stopped. Prints one line per stage (wall and CPU seconds of the child, each seed's
accuracy) and the last command's summary table; ``--json FILE`` writes the figures.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RECIPE = ROOT / "examples" / "paper_2layer.toml"


def command(args: argparse.Namespace, steps: int, resume: bool) -> list[str]:
    exe = Path(sys.executable).with_name("listcopy")
    cmd = [str(exe), "train", "--config", str(RECIPE), "--seeds", args.seeds, "--quiet",
           "--set", f"train.max_steps={steps}", "--set", "train.eval_every=1000",
           "--set", "train.checkpoint_every=100000", "--set", "train.device=cpu",
           "--out", str(args.out)]
    return cmd + ["--reshuffle"] * args.reshuffle + ["--resume"] * resume


def stage(args: argparse.Namespace, steps: int) -> dict:
    resume = (Path(args.out) / "summary.json").exists()
    cmd = command(args, steps, resume)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
    done = subprocess.run(cmd, capture_output=True, text=True, env=env)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        sys.exit(f"failed ({done.returncode}): {' '.join(cmd)}\n{done.stderr}")
    summary = json.loads((Path(args.out) / "summary.json").read_text())
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    accs = {row["seed"]: row["acc"] for row in summary["rows"]}
    print(f"max_steps {steps}: wall {wall:.0f} s, cpu {cpu:.0f} s; acc by seed "
          + ", ".join(f"{s}: {a:.4f}" for s, a in accs.items()), flush=True)
    return {"max_steps": steps, "command": " ".join(cmd), "wall_s": round(wall, 1),
            "cpu_s": round(cpu, 1), "acc": accs, "stdout": done.stdout}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", default="0-3")
    p.add_argument("--stages", default="20000,40000,60000,80000,100000")
    p.add_argument("--target", type=float, default=0.9)
    p.add_argument("--reshuffle", action="store_true")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", default="runs/research_2layer")
    p.add_argument("--json", metavar="FILE")
    args = p.parse_args(argv)
    stages = []
    for steps in (int(s) for s in args.stages.split(",")):
        stages.append(stage(args, steps))
        if max(stages[-1]["acc"].values()) >= args.target:
            break
    print(stages[-1]["stdout"], end="")
    best = max(stages[-1]["acc"].values())
    print(f"best validation accuracy {best:.4f} (target {args.target}); total wall "
          f"{sum(s['wall_s'] for s in stages):.0f} s, cpu {sum(s['cpu_s'] for s in stages):.0f} s")
    if args.json:
        Path(args.json).write_text(json.dumps(stages, indent=1) + "\n")
    return 0 if best >= args.target else 1


if __name__ == "__main__":
    sys.exit(main())
