"""Time ``listcopy analyze`` of the default model (3layer_100dig_8d) on one CPU thread.

    python benchmarks/analysis_time.py [CHECKPOINT] [--json]

Runs the whole analysis once in a fresh process (so UMAP's import and numba JIT are paid, as on
a first ``listcopy analyze``), then states UMAP's share: the geometry analysis again without UMAP,
and once more with UMAP now compiled. Every thread pool (torch, BLAS, numba) is limited to one.
"""

from __future__ import annotations

import os

for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
    os.environ[var] = "1"  # before numpy, torch or numba load

import argparse  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

DEFAULT = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "seed_default_1000.pt"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("path", nargs="?", default=str(DEFAULT), help="run directory or seed .pt")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args()

    t0 = time.perf_counter()
    import torch
    from threadpoolctl import threadpool_limits

    from listcopy.analysis import analyze
    from listcopy.analysis.geometry import embedding_geometry
    from listcopy.checkpoint import load

    torch.set_num_threads(1)
    threadpool_limits(1)
    t_import = time.perf_counter() - t0

    t0 = time.perf_counter()
    model, config = load(args.path)
    t_load = time.perf_counter() - t0

    steps: dict[str, float] = {}
    t0 = time.perf_counter()
    analyze(model, config, progress=lambda name, s: steps.__setitem__(name, s))
    t_total = time.perf_counter() - t0

    t0 = time.perf_counter()
    embedding_geometry(model, config, umap=False)
    t_geometry_no_umap = time.perf_counter() - t0
    t0 = time.perf_counter()
    embedding_geometry(model, config, umap=True)
    t_geometry_warm = time.perf_counter() - t0

    umap_first = steps["geometry"] - t_geometry_no_umap  # import + JIT + 4 fits
    umap_warm = t_geometry_warm - t_geometry_no_umap     # 4 fits, compiled
    out = {
        "model": config.name, "checkpoint": str(args.path), "threads": 1,
        "python": platform.python_version(), "torch": torch.__version__,
        "import_s": t_import, "load_s": t_load, "analysis_s": t_total, "steps_s": steps,
        "umap_first_call_s": umap_first, "umap_warm_s": umap_warm,
        "umap_share": umap_first / t_total, "analysis_without_umap_s": t_total - umap_first,
    }
    if args.json:
        print(json.dumps(out, indent=1))
        return 0
    print(f"{config.name} ({args.path}), 1 thread, torch {torch.__version__}")
    print(f"  import listcopy.analysis + torch   {t_import:6.2f} s")
    print(f"  load checkpoint                    {t_load:6.2f} s")
    for name, s in steps.items():
        print(f"    {name:<16}                 {s:6.2f} s")
    print(f"  whole analysis                     {t_total:6.2f} s")
    print(f"  of which UMAP (import + JIT + fits) {umap_first:5.2f} s ({umap_first / t_total:.0%});"
          f" once compiled its 4 fits take {umap_warm:.2f} s")
    print(f"  whole analysis without UMAP        {t_total - umap_first:6.2f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
