"""Time ``listcopy analyze`` (every analysis, the paper's included) of a 2-layer d_model 64 model
of the paper on one CPU thread; the issue's budget is 60 s.

    python benchmarks/paper_analysis_time.py [PATH] [--steps N] [--json]

PATH is a run directory or checkpoint (a research 2-layer d_model 64 model once listcopy loads
the line's variant); without it a model with the paper's settings (``listcopy.paper``'s
``2layer``) is trained for ``--steps`` steps first (not timed). The analysis runs once in this
fresh process, so UMAP's import and numba JIT are paid as on a first ``listcopy analyze``. Every
thread pool (torch, BLAS, numba) is limited to one.
"""

from __future__ import annotations

import os

for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
    os.environ[var] = "1"  # before numpy, torch or numba load

import argparse  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402

BUDGET_S = 60.0


def model_to_time(path: str | None, steps: int):
    from listcopy import load, train
    from listcopy.paper import paper_config

    if path is not None:
        return load(path)
    config = paper_config("2layer", [f"train.max_steps={steps}", "train.device=cpu"])
    with tempfile.TemporaryDirectory() as tmp:
        run = train(config, out=os.path.join(tmp, "run"), progress=False)
        return run.model(), config


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("path", nargs="?", help="run directory or checkpoint (default: train one)")
    parser.add_argument("--steps", type=int, default=5000, help="training steps without PATH")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args()

    import torch
    from threadpoolctl import threadpool_limits

    torch.set_num_threads(1)
    threadpool_limits(1)
    model, config = model_to_time(args.path, args.steps)

    from listcopy.analysis import analyze

    steps: dict[str, float] = {}
    t0 = time.perf_counter()
    result = analyze(model, config, progress=lambda name, s: steps.__setitem__(name, s))
    total = time.perf_counter() - t0
    out = {"model": config.name, "acc": result["metrics"]["acc"], "total_s": round(total, 2),
           "budget_s": BUDGET_S, "within_budget": total < BUDGET_S,
           "steps_s": {k: round(v, 2) for k, v in steps.items()},
           "torch": torch.__version__, "cpu": platform.processor() or platform.machine()}
    if args.json:
        print(json.dumps(out))
    else:
        print(f"{out['model']} (acc {out['acc']:.4f}): analyze {total:.1f} s on one thread "
              f"(budget {BUDGET_S:.0f} s)")
        for name, s in sorted(steps.items(), key=lambda kv: -kv[1]):
            print(f"  {name:<15} {s:7.2f} s")
    return 0 if total < BUDGET_S else 1


if __name__ == "__main__":
    raise SystemExit(main())
