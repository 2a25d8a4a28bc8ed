"""A sweep, from grid file to database: expand, record, group, train in parallel, record results.

    sweeps/NAME/
        sweep.db        the results (store.py): one row per run, one per grid entry
        grid.toml       a copy of the last grid file run here
        runs/NAME-seedS-KEY/   one run directory per distinct configuration
        sweep.lock      held by the running sweep: a second one on this directory is refused
        workers.lock    held (shared) by its worker processes

Re-running the same command skips finished runs (done, or failed: ``retry_failed`` retries those)
and resumes unfinished ones from their last checkpoint. After a kill (even -9) a re-run first waits
for the killed sweep's workers to be gone (they die with their driver), puts its ``running`` runs
back to ``pending``, and picks up results that reached a run directory but not the database. Two
sweeps on one directory: the second refuses with a one-line error (``SweepBusy``), whatever their
grids; a grid may be extended (more seeds, specs) by running it again on the same directory.
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from ..checkpoint import RUN_FILE, atomic_write, safe_name
from ..errors import Failure
from ..locks import FolderLock
from ..resources import Limits, guard_groups, usable_cpus
from .grid import Grid, PlannedRun, group_runs, load_grid, shape_keys
from .kinds import MODEL, kind_of, kind_of_dict
from .store import DB_FILE, LOCK_FILE, Store
from .worker import GroupTask

WORKER_LOCK_FILE = "workers.lock"
GRID_COPY = "grid.toml"
RUNS_DIR = "runs"
WORKER_WAIT_S = 60.0


class SweepError(Failure):
    """A sweep that cannot go on (exit 1): an unknown backend, a busy directory. One line."""


class SweepBusy(SweepError):
    """Another sweep (or its workers) holds the sweep directory."""


@dataclass
class SweepSummary:
    out: Path
    n_entries: int
    n_runs: int
    counts: dict[str, int]  # this grid's runs by status, at the end
    skipped: int  # already finished before this sweep started
    trained: int  # finished by this sweep
    wall_time_s: float = 0.0


@dataclass
class Plan:
    """What a sweep would do: runs, their status in the directory's database, and the groups."""

    grid: Grid
    out: Path
    runs: list[PlannedRun]
    status: dict[str, str]  # key -> status ("pending" for runs not in the database yet)
    groups: list[list[PlannedRun]]
    workers: int
    threads: int
    retry_failed: bool = False
    n_entries: int = 0

    @property
    def todo(self) -> list[PlannedRun]:
        return [r for r in self.runs if self.status[r.key] in _todo_states(self.retry_failed)]


MAX_RUN_NAME = 200  # characters of the name part of a run directory (255 bytes in all, at most)


def run_dir_name(run: PlannedRun) -> Path:
    """``runs/NAME-seedS-KEY``, relative to the sweep directory (NAME: the run's first name, cut
    to ``MAX_RUN_NAME`` characters: the key keeps the directory unique)."""
    name = safe_name(run.names[0])[:MAX_RUN_NAME]
    return Path(RUNS_DIR) / safe_name(f"{name}-seed{run.seed}-{run.key[:8]}")


def default_out(grid_path: str | Path) -> Path:
    return Path("sweeps") / Path(grid_path).stem


def cpu_count() -> int:
    return usable_cpus()


def _todo_states(retry_failed: bool) -> tuple[str, ...]:
    return ("pending", "running", "failed") if retry_failed else ("pending", "running")


def plan(grid: Grid | str | Path, out: str | Path, *, workers: int | None = None,
         threads: int | None = None, retry_failed: bool = False,
         max_members: int | None = None, allow_large: bool = False,
         progress: bool = True, quorum: int | None = None) -> Plan:
    """Expand and group without training or writing anything; refused (``TooLarge``) when the
    grid is over a policy limit or its groups do not fit in memory."""
    grid = grid if isinstance(grid, Grid) else load_grid(grid, allow_large, progress)
    return plan_runs(grid, grid.runs(), out, workers=workers, threads=threads,
                     retry_failed=retry_failed, max_members=max_members, allow_large=allow_large,
                     quorum=quorum)


def plan_runs(grid: Grid, runs: list[PlannedRun], out: str | Path, *, workers: int | None = None,
              threads: int | None = None, retry_failed: bool = False,
              max_members: int | None = None, allow_large: bool = False,
              quorum: int | None = None) -> Plan:
    """:func:`plan` of runs already expanded from ``grid``; with a ``quorum``, each shape is one
    group (its runs share the worker's threads, which take members as they come)."""
    out = Path(out)
    status = {r.key: "pending" for r in runs}
    if (out / DB_FILE).is_file():
        with Store(out / DB_FILE, readonly=True) as store:
            status.update(store.statuses(status))
    n_workers = cpu_count() if workers is None else workers
    todo = [r for r in runs if status[r.key] in _todo_states(retry_failed)]
    groups = group_runs(todo, 1 if quorum is not None else max(1, n_workers), max_members)
    if threads is None:
        threads = max(1, cpu_count() // max(1, min(n_workers, len(groups) or 1)))
    parallel = max(1, min(n_workers, len(groups)))
    models = [(g[0].config, len(g)) for g in groups if kind_of(g[0].config) is MODEL]
    guard_groups(models, parallel, Limits.of(allow_large),  # model runs: their size and device
                 f"{grid.source}: {parallel} group(s) of runs at once")
    n_entries = sum(len(r.points) for r in runs)
    return Plan(grid, out, runs, status, groups, n_workers, threads, retry_failed, n_entries)


def format_plan(p: Plan) -> str:
    dup = list(dict.fromkeys(" = ".join(r.names) for r in p.runs if len(r.names) > 1))
    done = sum(s == "done" for s in p.status.values())
    failed = sum(s == "failed" for s in p.status.values())
    lines = [f"{p.grid.source}: {p.n_entries} entries, {len(p.runs)} distinct runs"
             + (f" ({'; '.join(dup[:3])}" + (" ..." if len(dup) > 3 else "") + " trained once)"
                if dup else "")
             + f"; in {p.out}: {done} done, {failed} failed, {len(p.todo)} to train"]
    n = min(p.workers, len(p.groups))
    where = ("in-process" if p.workers == 0 else f"{n} worker{'s' if n != 1 else ''} x "
             f"{p.threads} thread{'s' if p.threads != 1 else ''}")
    shapes = len({kind_of(g[0].config).group_key(g[0].config) for g in p.groups})
    lines.append(f"{len(p.groups)} group{'s' if len(p.groups) != 1 else ''} of one shape "
                 f"({shapes} shape{'s' if shapes != 1 else ''}), {where}:")
    for i, group in enumerate(p.groups):
        kind = kind_of(group[0].config)
        steps = sorted({kind.steps(r.config) for r in group})
        lines.append(f"  group {i + 1}: {kind.label(group[0].config)}, {len(group)} run"
                     f"{'s' if len(group) > 1 else ''}, max_steps {'/'.join(map(str, steps))}")
        for run in group[:8]:
            lines.append(f"    {run.key[:8]}  seed {run.seed:<4} {', '.join(run.names)}"
                         + ("" if p.status[run.key] == "pending" else f"  [{p.status[run.key]}]"))
        if len(group) > 8:
            lines.append(f"    ... {len(group) - 8} more")
    return "\n".join(lines)


def run_sweep(grid: Grid | str | Path, out: str | Path, *, workers: int | None = None,
              threads: int | None = None, backend: str = "local", address: str | None = None,
              retry_failed: bool = False, progress: bool = True,
              max_members: int | None = None, allow_large: bool = False,
              quorum: int | None = None) -> SweepSummary:
    """Train every run of ``grid`` not yet finished in ``out``; results go to ``out/sweep.db``.

    ``workers``: processes (local; 0 = in this process) or groups in flight (ray); default the
    number of cores (local) or the cluster's CPUs (ray). ``threads``: torch threads per worker,
    default cores / workers. ``backend``: "local" or "ray" (``address`` None starts a local Ray).
    ``allow_large`` lifts the policy limits (``resources.Limits``). ``quorum``: each shape trains
    as one group, and its runs still training stop (``stop_reason`` "quorum") once this many of
    the shape's runs, those finished before included, have reached their threshold (where
    ``max_members`` splits a shape into several groups, each group counts its own: a shape then
    stops later, never sooner). The grid is expanded and its plan checked (limits, memory) before
    anything is written.
    """
    t0 = time.perf_counter()
    grid = grid if isinstance(grid, Grid) else load_grid(grid, allow_large, progress)
    _check_backend(backend)
    options = dict(workers=workers, threads=threads, retry_failed=retry_failed,
                   max_members=max_members, allow_large=allow_large, quorum=quorum)
    runs = grid.runs()
    plan_runs(grid, runs, out, **options)  # refused here (TooLarge) before anything is written
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    with _exclusive(out):
        _wait_for_old_workers(out / WORKER_LOCK_FILE)
        with Store(out / DB_FILE) as store:
            store.add(runs, run_dir_name)  # refuses runs of another kind than the directory's
            if grid.text is not None:  # the bytes read (a second read of /dev/stdin gets none)
                atomic_write(out / GRID_COPY, lambda tmp: tmp.write_bytes(grid.text))
            store.recover()
            p = plan_runs(grid, runs, out, **options)
            before = store.statuses([r.key for r in runs])
            run_dirs = {k: out / d for k, d in store.run_dirs(before).items()}
            if retry_failed:
                _clear_failed([r for r in p.todo if before[r.key] == "failed"], run_dirs)
            tasks = _tasks(p, run_dirs, _quorums(p, store, quorum))
            todo = {r.key for r in p.todo}
            skipped = len(runs) - len(todo)
            driver = Driver(store, run_dirs, total=len(runs), progress=progress,
                            finished=[s for k, s in before.items() if k not in todo])
            try:
                _backend(backend, p, address, out, workers).run(tasks, driver)
            finally:
                driver.close()
            counts = _count(store.statuses([r.key for r in runs]))
    return SweepSummary(out, p.n_entries, len(runs), counts, skipped, driver.n_finished,
                        time.perf_counter() - t0)


def _tasks(p: Plan, run_dirs: dict[str, Path], quorums: list[int | None]) -> list[GroupTask]:
    return [GroupTask(tuple(r.key for r in g), tuple(r.config.to_dict() for r in g),
                      tuple(str(run_dirs[r.key].resolve()) for r in g), p.threads, q)
            for g, q in zip(p.groups, quorums)]


def _quorums(p: Plan, store: Store, quorum: int | None) -> list[int | None]:
    """Each group's quorum: ``quorum`` less its shape's runs that reached the threshold before."""
    if quorum is None:
        return [None] * len(p.groups)
    passed = {row["key"] for row in store.rows()
              if row["status"] == "done" and row["steps_to_threshold"] is not None}
    shapes = shape_keys([r.config for r in p.runs if r.key in passed])
    return [max(0, quorum - shapes.count(shape_keys([g[0].config])[0])) for g in p.groups]


def _check_backend(backend: str) -> None:
    if backend not in ("local", "ray"):
        raise SweepError(f"unknown backend {backend!r}: use local or ray")
    if backend == "ray":
        from .ray_backend import import_ray

        import_ray()  # RayMissing (exit 1) before anything is written


def _backend(name: str, p: Plan, address: str | None, out: Path, workers: int | None):
    if name == "ray":
        from .ray_backend import RayBackend

        if workers is None and address is None:  # a local cluster: this machine's cores
            workers = p.workers
        return RayBackend(address, workers or None, p.threads)
    from .local import LocalBackend

    return LocalBackend(min(p.workers, len(p.groups)) if p.workers else 0, p.threads,
                        out / WORKER_LOCK_FILE)


def _count(statuses: dict[str, str]) -> dict[str, int]:
    counts = {s: 0 for s in ("done", "failed", "pending", "running")}
    for s in statuses.values():
        counts[s] += 1
    return counts


def _clear_failed(runs: Sequence[PlannedRun], run_dirs: dict[str, Path]) -> None:
    """A retried run that failed by a non-finite loss starts over; one that crashed resumes."""
    for run in runs:
        d = run_dirs[run.key]
        try:
            record = json.loads((d / RUN_FILE).read_text())
        except (OSError, ValueError, RecursionError):
            continue
        if record.get("status") == "failed":
            shutil.rmtree(d, ignore_errors=True)


# ---- the driver: database, run-directory watch, progress bar ---------------------------------

class Driver:
    """Receives a backend's events, records them in the store and shows progress."""

    def __init__(self, store: Store, run_dirs: dict[str, Path], total: int, progress: bool,
                 finished: Sequence[str] = ()):
        """``finished``: the statuses of the runs finished before, that are not trained again."""
        self.store, self.run_dirs = store, run_dirs
        self.running: set[str] = set()
        self.mtimes: dict[str, int] = {}
        self.n_finished = 0
        self.done = sum(s == "done" for s in finished)
        self.failed = sum(s == "failed" for s in finished)
        self.bar = None
        if progress:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=total, initial=len(finished), unit="run", desc="sweep",
                            dynamic_ncols=True, smoothing=0.05)
            self._postfix()

    def on_start(self, task: GroupTask) -> None:
        self.store.start(task.keys)
        self.running.update(task.keys)
        self._postfix()

    def on_results(self, task: GroupTask, results: Sequence[dict[str, Any]]) -> None:
        for key, result in zip(task.keys, results):
            self._finish(key, result)

    def tick(self, tasks: Sequence[GroupTask]) -> None:
        """Record runs that finished inside a group still training (their run.json says so)."""
        for task in tasks:
            kind = kind_of_dict(task.configs[0])
            for key in task.keys:
                if key not in self.running:
                    continue
                path = self.run_dirs[key] / kind.result_file
                try:
                    mtime = path.stat().st_mtime_ns
                except OSError:
                    continue
                if self.mtimes.get(key) == mtime:
                    continue
                self.mtimes[key] = mtime
                try:
                    record = json.loads(path.read_text())
                except (OSError, ValueError, RecursionError):
                    continue
                result = kind.finished(record) if isinstance(record, dict) else None
                if result is not None:
                    self._finish(key, result)

    def _finish(self, key: str, result: dict[str, Any]) -> None:
        if key not in self.running:
            return
        self.running.discard(key)
        if self.store.finish(key, result):
            self.n_finished += 1
            if result["status"] == "done":
                self.done += 1
            else:
                self.failed += 1
            if self.bar is not None:
                self._postfix(refresh=False)
                self.bar.update(1)
                return
        self._postfix()

    def _postfix(self, refresh: bool = True) -> None:
        if self.bar is not None:
            self.bar.set_postfix(done=self.done, failed=self.failed, running=len(self.running),
                                 refresh=refresh)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


# ---- locks -------------------------------------------------------------------------------------

def _exclusive(out: Path) -> FolderLock:
    """``sweep.lock``: one sweep per directory (locks.py; the kernel frees it when we die)."""
    return FolderLock(out / LOCK_FILE, lambda pid: SweepBusy(
        f"{out}: another sweep (pid {pid}) is running in this directory; wait for it to finish "
        "or use another --out"))


def _wait_for_old_workers(path: Path, timeout: float = WORKER_WAIT_S) -> None:
    """Block until no worker of an earlier (killed) sweep holds ``workers.lock``."""
    import fcntl

    with open(path, "a") as fh:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
                fcntl.flock(fh, fcntl.LOCK_UN)
                return
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise SweepBusy(f"{path.parent}: worker processes of an earlier sweep are "
                                    f"still running after {timeout:.0f} s") from None
                time.sleep(0.1)
