"""The Ray backend: the same groups as Ray tasks, on a cluster or a local one started here.

Each task trains in a scratch directory on its node and returns its runs' files; the driver writes
them into the sweep directory (each file atomically, in the trainer's order), then records the
results. A group resumes from the checkpoints the driver holds: they travel with the task. The
nodes need listcopy installed (the same version as the driver).

Ray is an optional extra: ``pip install listcopy[ray]``.
"""

from __future__ import annotations

import logging
import socket
from pathlib import Path
from typing import Sequence

from ..checkpoint import atomic_write
from ..errors import BadInput, Failure, one_line
from .kinds import kind_of_dict
from .store import failure
from .worker import GroupTask, read_run_files, train_group_portable

POLL_S = 1.0
CONNECT_TIMEOUT_S = 10.0


def check_address(address: str | None, probe: bool = True,
                  timeout: float = CONNECT_TIMEOUT_S) -> None:
    """A Ray ``--address`` that is not "auto" or "local": HOST:PORT (or ray://HOST:PORT) with a
    port in 1..65535 (``BadInput``), and (``probe``) something listening there (``Failure``): Ray
    itself retries an address that answers nothing for minutes, printing warnings."""
    if address is None or address in ("auto", "local"):
        return
    host, sep, port = address.removeprefix("ray://").rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise BadInput(f"--address {address!r}: use auto, HOST:PORT or ray://HOST:PORT")
    if not probe:
        return
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout).close()
    except OSError as err:
        raise Failure(f"--address {address}: no Ray cluster answers there ({one_line(err)})") \
            from None


class RayBackend:
    """``address``: None starts a local cluster (``workers`` CPUs), "auto" or "HOST:PORT" joins one.

    At most ``workers`` groups are in flight (default: the cluster's CPUs / ``threads``).
    """

    name = "ray"

    def __init__(self, address: str | None, workers: int | None, threads: int = 1):
        self.address, self.workers, self.threads = address, workers, threads

    def run(self, tasks: Sequence[GroupTask], driver) -> None:
        ray = import_ray()
        started = not ray.is_initialized()
        if started:
            kwargs = {"include_dashboard": False, "logging_level": logging.WARNING}
            if self.address is None and self.workers:
                kwargs["num_cpus"] = self.workers * self.threads
            check_address(self.address)
            try:
                ray.init(address=self.address, **kwargs)
            except (ConnectionError, RuntimeError, ValueError) as err:
                raise Failure(f"ray.init: {one_line(err, 300, first_line=True)}") from None
        try:
            self._run(ray, tasks, driver)
        finally:
            if started:
                ray.shutdown()

    def _run(self, ray, tasks: Sequence[GroupTask], driver) -> None:
        cpus = int(ray.cluster_resources().get("CPU", 1))
        capacity = self.workers or max(1, cpus // self.threads)
        remote = ray.remote(num_cpus=self.threads, max_retries=0)(train_group_portable)
        todo, running = list(tasks), {}
        while todo or running:
            while todo and len(running) < capacity:
                task = todo.pop(0)
                driver.on_start(task)
                names = kind_of_dict(task.configs[0]).run_files
                files = [read_run_files(Path(d), names) for d in task.run_dirs]
                running[remote.remote(task, files)] = task
            ready, _ = ray.wait(list(running), num_returns=1, timeout=POLL_S)
            for ref in ready:
                task = running.pop(ref)
                try:
                    out = ray.get(ref)
                except Exception as err:  # noqa: BLE001  (a lost node, a task error: runs fail)
                    why = one_line(err, 300, first_line=True)  # a RayTaskError adds a traceback
                    driver.on_results(task, [failure(f"ray task failed: {why}")
                                             for _ in task.keys])
                    continue
                names = kind_of_dict(task.configs[0]).run_files
                for run_dir, (_, files) in zip(task.run_dirs, out):
                    write_run_files(Path(run_dir), files, names)
                driver.on_results(task, [result for result, _ in out])


def write_run_files(run_dir: Path, files: dict[str, bytes], names: Sequence[str]) -> None:
    """Each file atomically, in the order of ``names`` (a kind's ``run_files``: the record last,
    as the trainer writes them)."""
    for name in names:
        if name in files:
            data = files[name]
            atomic_write(run_dir / name, lambda tmp, data=data: tmp.write_bytes(data))


def import_ray():
    try:
        import ray
    except ImportError:
        raise RayMissing("the ray backend needs Ray: pip install 'listcopy[ray]'") from None
    return ray


class RayMissing(Failure):
    """``--backend ray`` without Ray installed (exit 1)."""
