"""Time ``listcopy report`` of the default model (3layer_100dig_8d) on one CPU core, and its size.

    python benchmarks/report_time.py [CHECKPOINT] [--png] [--json]

Runs the whole report once in a fresh process, as a first ``listcopy report`` would: loading,
every analysis (UMAP's import and numba JIT included), the figures, the page, the write; with
``--png`` also every figure as a PNG through kaleido and the system's Chromium. The process (and
so the browser it starts) is pinned to one core and every thread pool (torch, BLAS, numba) limited
to one thread. Prints the seconds of each stage, the total and the page's size; the load average
is printed too, since other work on the machine slows every number.
"""

from __future__ import annotations

import os

for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
    os.environ[var] = "1"  # before numpy, torch or numba load

import argparse  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

DEFAULT = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "seed_default_1000.pt"
TARGET_S = 90.0
TARGET_BYTES = 10_000_000


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("path", nargs="?", default=str(DEFAULT), help="run directory or seed .pt")
    parser.add_argument("--png", action="store_true", help="also export every figure as PNG")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args()

    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
    t0 = time.perf_counter()
    import torch

    torch.set_num_threads(1)
    from listcopy.report import model_report

    imports = time.perf_counter() - t0
    with tempfile.TemporaryDirectory() as tmp:
        info = model_report(args.path, Path(tmp) / "report.html",
                            png_dir=Path(tmp) / "png" if args.png else None, progress=False)
    total = time.perf_counter() - t0
    result = {
        "model": Path(args.path).name, "cores": len(os.sched_getaffinity(0))
        if hasattr(os, "sched_getaffinity") else None,
        "imports_s": round(imports, 2),
        "stages_s": {k: round(v, 2) for k, v in info.seconds.items() if k != "total"},
        "total_s": round(total, 2), "bytes": info.bytes, "figures": len(info.figures),
        "pngs": len(info.pngs), "load_average": [round(x, 2) for x in os.getloadavg()],
        "target_s": TARGET_S, "target_bytes": TARGET_BYTES,
    }
    if args.json:
        print(json.dumps(result))
    else:
        print(f"report of {result['model']} on {result['cores']} core: {total:.1f} s "
              f"(target < {TARGET_S:g} s), {info.bytes / 1e6:.2f} MB (target < "
              f"{TARGET_BYTES / 1e6:g} MB), {len(info.figures)} figures"
              + (f", {len(info.pngs)} PNGs" if args.png else ""))
        print(f"  imports {imports:.1f} s; " + "; ".join(
            f"{k} {v:.2f} s" for k, v in result["stages_s"].items()))
        print(f"  load average {result['load_average']}")
    return 0 if total < TARGET_S and info.bytes < TARGET_BYTES else 1


if __name__ == "__main__":
    sys.exit(main())
