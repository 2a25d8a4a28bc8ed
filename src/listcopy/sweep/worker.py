"""What a worker does with one group: train its runs together, report one result per run.

This is the sweep package's only door to the trainer (``train_ensemble``; a group of another kind
of run, SAEs, goes to its kind's ``train_group``), used by every backend:
local worker processes call :func:`train_group` on the shared file system; Ray tasks call
:func:`train_group_portable`, which trains in a scratch directory and sends the run directories'
files back as bytes for the driver to write.
"""

from __future__ import annotations

import os
import tempfile
import threading
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from ..config import Config
from .kinds import MODEL, kind_of_dict
from .store import failure, result_of


@dataclass(frozen=True)
class GroupTask:
    """One group of runs of one shape: picklable, sent to a worker."""

    keys: tuple[str, ...]
    configs: tuple[dict, ...]  # Config.to_dict() of each run
    run_dirs: tuple[str, ...]  # absolute paths (local) or names (portable)
    threads: int = 1
    quorum: int | None = None  # stop the rest once this many have passed (training.py)


def train_group(task: GroupTask) -> list[dict[str, Any]]:
    """Train ``task``'s runs in their run directories (resuming any checkpoint there).

    Returns one result per run (see store.result_of); an exception fails every run of the group
    with its message, so that the sweep goes on.
    """
    from ..training import train_ensemble  # the one import of the trainer in listcopy.sweep

    _set_threads(task.threads)
    try:
        kind = kind_of_dict(task.configs[0])
        if kind is not MODEL:
            return kind.train_group(task)
        configs = [Config.from_dict(c) for c in task.configs]
        runs = train_ensemble(configs, [Path(d) for d in task.run_dirs], resume=True,
                              progress=False, quorum=task.quorum)
        return [result_of(run.record()) for run in runs]
    except Exception as err:  # noqa: BLE001  (any failure is recorded, the sweep goes on)
        return [failure(err) for _ in task.keys]


def train_group_portable(task: GroupTask, files: list[dict[str, bytes]]
                         ) -> list[tuple[dict[str, Any], dict[str, bytes]]]:
    """:func:`train_group` on a machine that does not see the sweep directory.

    ``files[i]`` holds run i's existing run-directory files (to resume from), by file name. Returns,
    per run, its result and its run directory's files.
    """
    names = kind_of_dict(task.configs[0]).run_files
    with tempfile.TemporaryDirectory(prefix="listcopy-sweep-") as scratch:
        dirs = []
        for i, existing in enumerate(files):
            d = Path(scratch) / f"run{i}"
            d.mkdir()
            for name, data in existing.items():
                if name in names:
                    (d / name).write_bytes(data)
            dirs.append(str(d))
        local = replace(task, run_dirs=tuple(dirs))
        results = train_group(local)
        return [(result, read_run_files(Path(d), names)) for result, d in zip(results, dirs)]


def read_run_files(run_dir: Path, names: tuple[str, ...]) -> dict[str, bytes]:
    """The files ``names`` (a kind's ``run_files``) of a run directory that exist, by name."""
    return {name: (run_dir / name).read_bytes() for name in names if (run_dir / name).is_file()}


def _set_threads(n: int) -> None:
    import torch

    if n and torch.get_num_threads() != n:
        torch.set_num_threads(n)


# ---- local worker processes ------------------------------------------------------------------

def init_worker(threads: int, worker_lock: str | None, driver: int | None = None) -> None:
    """Pool initializer: thread count, a shared lock on ``worker_lock``, and death with the driver.

    A worker must never outlive the sweep that started it (a re-run would train the same run
    directories twice): on Linux the kernel kills it when the driver dies (PR_SET_PDEATHSIG);
    everywhere, a watchdog thread exits when the parent process changes. The shared lock lets a new
    sweep wait until the last worker of a killed one is gone. ``driver`` is the pid of the process
    that started the pool: a worker whose driver died while it was still starting (importing torch
    takes seconds on a loaded machine) must not take the parent it finds then for its driver.
    """
    parent = os.getppid() if driver is None else driver
    _die_with_parent(parent)
    if worker_lock:
        import fcntl

        fh = open(worker_lock, "a")  # kept open (and locked) for the life of the process
        fcntl.flock(fh, fcntl.LOCK_SH)
        globals()["_worker_lock_file"] = fh
    _set_threads(threads)


def _die_with_parent(parent: int) -> None:
    try:
        import ctypes
        import signal

        libc = ctypes.CDLL(None, use_errno=True)
        PR_SET_PDEATHSIG = 1
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):
        pass
    if os.getppid() != parent:  # the parent died before prctl took effect
        os._exit(1)

    def watch() -> None:
        while True:
            time.sleep(0.5)
            if os.getppid() != parent:
                os._exit(1)

    threading.Thread(target=watch, name="listcopy-parent-watch", daemon=True).start()
