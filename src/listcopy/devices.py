"""Which device trains a job fastest: ``train.device = "auto"`` resolved by the job, from one table.

The job: how many models train at once, their width, and whether the compiled CPU kernel trains
them. A training step of these models is a few hundred tiny GPU kernels: launch-bound, it costs
about as much for one model as for 64 (an H100: 7.9 and 8.7 ms per step, the default shape),
while on the CPU a step grows with the models trained at once and with their width. So an
accelerator pays off from some number of models at once, fewer for wider models: ``CROSSOVERS``,
one row per accelerator and width, per CPU thread (the CPU spreads members over its threads).

``choose(config, n_members)`` returns the device and a one-line reason (``listcopy train`` prints
it). Overriding: ``train.device`` names the device outright (``--set train.device=cuda`` or
``cpu``; "auto" is the table's choice), and ``choose(..., crossovers=...)`` takes another table,
e.g. one measured with ``listcopy bench --device cuda`` on another GPU.
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


# H100 figures (benchmarks/README.md): one default model 7.9 ms/step, 64 at once 8.7 ms, against
# 0.079 ms per model-step for the CPU kernel (one Zen 4 thread) and 2.2 ms for the CPU's torch
# backend. Wider rows: estimated, no GPU was lent to measure them: the same launch-bound GPU step
# (about 9 ms) over the CPU kernel's model-step at that width, 0.079 ms times its ratio to d_model 8
# in one `listcopy bench --shapes` run (benchmarks/README.md, "Per shape", E=64, seed flags: 3.9x
# at d_model 32, 10.2x at 64, 42x at 128: about 0.31, 0.80 and 3.3 ms). mps: unmeasured, as cuda.
_ROWS = ((8, 128, 4, "measured (H100)"), (32, 30, 2, "estimated"), (64, 12, 1, "estimated"),
         (128, 3, 1, "estimated"), (1 << 30, 1, 1, "estimated"))
CROSSOVERS: tuple[Crossover, ...] = tuple(
    Crossover(kind, widest, kernel, torch_, source if kind == "cuda" else "unmeasured (as cuda)")
    for kind in ("cuda", "mps") for widest, kernel, torch_, source in _ROWS)


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
