"""Issue 18's acceptance: a BatchTopK SAE (d_sae 100, k 4) trained with ``listcopy sae train`` on
the SEP residual after layer 0 of a 2-layer d_model 64 model keeps the patched accuracy within
5 points of the model's own.

    .venv/bin/python benchmarks/sae_acceptance.py --model runs/research_2layer/seed0 \
        [--out runs/sae_acceptance] [--threads 2] [--json FILE] [-- EXTRA sae train FLAGS]

Runs, as a child process with ``--threads`` torch threads,

    listcopy sae train MODEL --d-sae 100 --k 4 --out OUT --json OUT.json --quiet

(the defaults otherwise: BatchTopK, blocks.0.hook_resid_post at SEP, lr 1e-3, 10,000 steps of
1,024 rows) and prints its wall and CPU seconds, the model's and the patched accuracy on the
validation lists, the drop, L0 and dead latents; exit 1 if the drop is 5 points or more.
A model: ``benchmarks/research_2layer.py`` trains the research variant's (examples/paper_2layer.toml).
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

LIMIT = 0.05  # the largest drop allowed (5 points of accuracy)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", required=True, help="run directory or seed .pt")
    p.add_argument("--out", default="runs/sae_acceptance")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--json", metavar="FILE")
    p.add_argument("extra", nargs="*", help="more flags for listcopy sae train (after --)")
    args = p.parse_args(argv)
    exe = Path(sys.executable).with_name("listcopy")
    result_file = Path(f"{args.out}.json")
    cmd = [str(exe), "sae", "train", args.model, "--d-sae", "100", "--k", "4", "--out", args.out,
           "--json", str(result_file), "--quiet", "--threads", str(args.threads), *args.extra]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True,
                          env={**os.environ, "OMP_NUM_THREADS": str(args.threads)})
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        sys.exit(f"failed ({done.returncode}): {' '.join(cmd)}\n{done.stderr}")
    m = json.loads(result_file.read_text())
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    ok = m["drop"] < LIMIT
    print(" ".join(cmd))
    print(f"wall {wall:.0f} s, cpu {cpu:.0f} s; accuracy {m['baseline_acc']:.4f} -> patched "
          f"{m['patched_acc']:.4f} (drop {100 * m['drop']:.2f} points, limit {100 * LIMIT:g}); "
          f"L0 {m['l0']:.2f}, dead {m['dead']}/{m['d_sae']}, explained variance "
          f"{m['explained_variance']:.4f}: {'PASS' if ok else 'FAIL'}")
    if args.json:
        Path(args.json).write_text(json.dumps({"command": " ".join(cmd), "wall_s": round(wall, 1),
                                               "cpu_s": round(cpu, 1), "metrics": m,
                                               "pass": ok}, indent=1) + "\n")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
