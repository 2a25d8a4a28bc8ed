"""Which device trains a job fastest: ``train.device = "auto"`` resolved by the job, from one table.

The job: how many models train at once, their width, and whether the compiled CPU kernel trains
them. A training step of these models is a few hundred tiny GPU kernels: launch-bound, it costs
about as much for one model as for 64 (an H200, the steps replayed as CUDA graphs: 0.69 and 0.79
ms per step, the default shape; eager, on an H100: 7.9 and 8.7 ms), while on the CPU a step grows
with the models trained at once and with their width. So an accelerator pays off from some number
of models at once, fewer for wider models: ``CROSSOVERS``, one row per accelerator and width, per
CPU thread (the CPU spreads members over its threads).

``choose(config, n_members)`` returns the device and a one-line reason (``listcopy train`` prints
it). Overriding: ``train.device`` names the device outright (``--set train.device=cuda`` or
``cpu``; "auto" is the table's choice), and ``choose(..., crossovers=...)`` takes another table,
e.g. one measured with ``benchmarks/device_widths.py`` on another GPU.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch

from .config import Config


@dataclass(frozen=True)
class Crossover:
    """From ``kernel`` models at once per CPU thread (``torch`` where the CPU has no kernel) an
    accelerator of this ``kind`` trains models up to d_model ``widest`` faster than the CPU."""

    kind: str
    widest: int
    kernel: int
    torch: int
    source: str


# cuda, measured on an H200 (benchmarks/device_widths.py, benchmarks/README.md "On a GPU (NVIDIA
# H200, CUDA graphs)"): with its steps replayed as CUDA graphs (engine/cuda_graph.py) one model's
# step takes 0.64-0.69 ms at every d_model from 8 to 128, and 64 at once 0.79 / 1.00 / 1.39 / 2.05
# ms, against one thread of that machine's CPU: the kernel's model-step 0.068 / 0.34 / 0.69 / 2.17
# ms at d_model 8 / 32 / 64 / 128 (the CPU's torch backend: 2.2 ms at d_model 8 on a Zen 4 thread).
# So the GPU pays off from ceil(0.69 / 0.068) = 11 default models per CPU thread, 2 at d_model 32, 1
# at 128; d_model 64 is a tie at one model (0.67 against 0.69 ms): 2, so a tie stays on the CPU.
# Without the kernel the CPU loses from one.
# mps has no graphs: its rows are the eager GPU's step (an H100 without graphs: 7.9 ms for one
# default model, 8.7 ms for 64) over the kernel's model-step (one Zen 4 thread: 0.079 ms at d_model
# 8; 3.9x, 10.2x and 42x that at 32, 64 and 128), unmeasured on an mps device.
_CUDA = ((8, 11, 1), (32, 2, 1), (64, 2, 1), (128, 1, 1), (1 << 30, 1, 1))
_EAGER = ((8, 128, 4), (32, 30, 2), (64, 12, 1), (128, 3, 1), (1 << 30, 1, 1))
CROSSOVERS: tuple[Crossover, ...] = (
    tuple(Crossover("cuda", w, k, t, "measured (H200, CUDA graphs)") for w, k, t in _CUDA)
    + tuple(Crossover("mps", w, k, t, "estimated (eager GPU steps)") for w, k, t in _EAGER))


@dataclass(frozen=True)
class Choice:
    device: torch.device
    why: str

    def line(self) -> str:
        return f"device {self.device}: {self.why}"


def accelerators() -> list[str]:
    """The accelerators torch can use here, best first: cuda, mps."""
    found = ["cuda"] if torch.cuda.is_available() else []
    mps = getattr(torch.backends, "mps", None)
    return found + (["mps"] if mps is not None and mps.is_available() else [])


def cpu_threads() -> int:
    """Threads a CPU run uses: torch's setting, at most the CPUs this process may run on."""
    from .engine.kernel_backend import usable_cpus

    return max(1, min(torch.get_num_threads(), usable_cpus()))


def kernel_trains(config: Config) -> bool:
    """Whether the CPU would train ``config`` with the compiled kernel: the kernel takes the shape,
    is the faster CPU backend for it, and loads. Loading builds it on first use (cached after), so
    a broken compiler counts as no kernel, and a cached build counts even without a compiler."""
    from .engine.ensemble import Ensemble
    from .model import build_model

    weights = build_model(config, torch.Generator().manual_seed(0), hooks=False).state_dict()
    return Ensemble(config, [weights], "cpu").backend == "kernel"


def crossover(kind: str, d_model: int,
              crossovers: Sequence[Crossover] = CROSSOVERS) -> Crossover | None:
    """The row of ``crossovers`` for this accelerator and width (None: no row, keep the CPU)."""
    for row in crossovers:
        if row.kind == kind and d_model <= row.widest:
            return row
    return None


def choose(config: Config, n_members: int, *, crossovers: Sequence[Crossover] = CROSSOVERS,
           found: Sequence[str] | None = None, threads: int | None = None,
           kernel: bool | None = None) -> Choice:
    """The device for ``n_members`` models of ``config`` at once, and why. ``found`` (the
    accelerators present), ``threads`` and ``kernel`` default to what this machine has."""
    asked = config.train.device
    if asked != "auto":
        return Choice(torch.device(asked), f"train.device = {asked}")
    found = accelerators() if found is None else list(found)
    kernel = kernel_trains(config) if kernel is None else kernel
    cpu_path = "the CPU kernel" if kernel else "torch on the CPU"
    if not found:
        return Choice(torch.device("cpu"), f"no GPU; {cpu_path}")
    kind, D = found[0], config.model.d_model
    row = crossover(kind, D, crossovers)
    if row is None:
        return Choice(torch.device("cpu"), f"{cpu_path}: no {kind} crossover for d_model {D}")
    threads = cpu_threads() if threads is None else threads
    need = (row.kernel if kernel else row.torch) * threads
    if n_members >= need:
        return Choice(torch.device(kind), f"{n_members} model(s) at once of d_model {D}: {kind} "
                      f"is faster from {need} ({row.source}; devices.py)")
    return Choice(torch.device("cpu"), f"{n_members} model(s) at once of d_model {D}: {cpu_path} "
                  f"on {threads} thread(s) is faster than {kind} below {need} ({row.source}); "
                  f"--set train.device={kind} to use it anyway")
