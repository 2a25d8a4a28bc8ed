"""The local backend: groups run over N worker processes (spawned, never forked) on this machine."""

from __future__ import annotations

import multiprocessing
import os
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Sequence

from ..errors import Failure
from .worker import GroupTask, init_worker, train_group

POLL_S = 0.5  # how often the driver looks at the run directories of running groups


class WorkerDied(Failure):
    """A worker process ended without reporting (killed, out of memory): exit 1."""


class LocalBackend:
    """``workers`` processes of ``threads`` torch threads each; ``workers=0``: in this process."""

    name = "local"

    def __init__(self, workers: int, threads: int, worker_lock: Path | None = None,
                 start_method: str = "spawn"):
        self.workers, self.threads = workers, threads
        self.worker_lock = worker_lock
        self.start_method = start_method  # torch + fork is unsafe: spawn or forkserver

    def run(self, tasks: Sequence[GroupTask], driver) -> None:
        if self.workers == 0:
            for task in tasks:
                driver.on_start(task)
                driver.on_results(task, train_group(task))
            return
        ctx = multiprocessing.get_context(self.start_method)
        lock = str(self.worker_lock) if self.worker_lock else None
        pool = ProcessPoolExecutor(self.workers, mp_context=ctx, initializer=init_worker,
                                   initargs=(self.threads, lock, os.getpid()))
        todo = list(tasks)
        running = {}
        try:
            while todo or running:
                while todo and len(running) < self.workers:  # at most one group per worker
                    task = todo.pop(0)
                    driver.on_start(task)
                    running[pool.submit(train_group, task)] = task
                done, _ = wait(running, timeout=POLL_S, return_when=FIRST_COMPLETED)
                for future in done:
                    task = running.pop(future)
                    try:
                        results = future.result()
                    except BrokenProcessPool:
                        raise WorkerDied("a worker process died without reporting (killed or out "
                                         "of memory); re-run the same command to resume") from None
                    driver.on_results(task, results)
                driver.tick(list(running.values()))
        except BaseException:
            _terminate(pool)
            raise
        pool.shutdown(wait=True)


def _terminate(pool: ProcessPoolExecutor) -> None:
    """Stop now: kill the workers rather than wait for their groups to finish."""
    processes = list((getattr(pool, "_processes", None) or {}).values())
    pool.shutdown(wait=False, cancel_futures=True)
    for p in processes:
        if p.is_alive():
            p.kill()
    for p in processes:
        p.join(timeout=5)
