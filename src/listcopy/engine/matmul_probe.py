"""The matrix-product rate the kernel's compiler reaches on this CPU (matmul_probe.c), for floors.

``load_probe()`` compiles matmul_probe.c with the kernel's compiler and flags (kernel_build) into a
private temporary folder and returns a function ``probe(threads, reps) -> FLOPs done``; None, with
a one-line notice, where no C compiler works. The caller times it (bench_shapes.compiled_rate).
"""

from __future__ import annotations

import ctypes
import logging
import shutil
import tempfile
from pathlib import Path
from typing import Callable

from .kernel_build import build, c_compiler, lanes, reason

log = logging.getLogger("listcopy")


def probe_source() -> Path:
    return Path(__file__).with_name("matmul_probe.c")


def load_probe(lanes_: int | None = None) -> Callable[[int, int], float] | None:
    """``probe(threads, reps)``: ``reps`` cache-resident float32 products (192 x 256 x 256, MR x NV
    register tiles) on each of ``threads`` threads, returning the FLOPs done; None without a C
    compiler. ``lanes_``: floats per SIMD vector (default: 16 with AVX-512, else 8)."""
    tmp = Path(tempfile.mkdtemp(prefix="listcopy-probe-"))
    try:
        lib = ctypes.CDLL(str(build(f"#define W {lanes_ or lanes()}\n", c_compiler(), tmp,
                                    c_file=probe_source())))
    except (OSError, RuntimeError) as err:
        log.warning("listcopy: no compiled matrix-product probe (%s); the floor is torch's sgemm",
                    reason(err))
        return None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)  # the loaded library stays mapped
    fn = lib.lc_matmul_probe
    fn.restype, fn.argtypes = ctypes.c_double, [ctypes.c_int, ctypes.c_int]

    def probe(threads: int, reps: int) -> float:
        flops = fn(threads, reps)
        if flops < 0:
            raise MemoryError("matmul probe: out of memory")
        return flops

    return probe
