"""A listcopy command paused at a chosen moment, for tests that kill or signal it exactly there.

    python -m tests.pause DIR MOMENT N ARGS...       (from the repository's root)

runs ``listcopy ARGS`` (``listcopy.cli.main``) instrumented: at the N-th MOMENT (1 = the first) the
process writes its pid to ``DIR/paused`` (atomically) and waits until ``DIR/release`` exists. A test
starts it with :func:`start`, waits for the file with :func:`wait_paused`, and kills, signals or
releases it: the moment is reached by construction, never by timing. Moments, counted per process
(a sweep's worker processes count their own):

    fsync       before the N-th fsync of a file (a temporary's bytes written, not yet on disk)
    rename      before the N-th rename of a complete temporary over its file (not yet in place)
    checkpoint  after the N-th complete checkpoint (``checkpoint.write_run`` returned)
    finished    after the N-th checkpoint of a run that has stopped (done or failed)
    group       before a sweep worker trains its N-th group (nothing of it written yet)
    start       before the sweep's driver marks its N-th group as running in the database
    record      before the sweep's driver records its N-th result in the database
"""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PAUSED, RELEASE = "paused", "release"
ENV = "LISTCOPY_TEST_PAUSE"  # DIR|MOMENT|N: how the sweep's worker processes learn the moment
_installed: list[str] = []   # the spec installed in this process (once)


def start(directory: Path, moment: str, n: int, *args: str, **popen) -> subprocess.Popen:
    """``listcopy ARGS`` paused at the ``n``-th ``moment``; stdout and stderr are pipes (text)."""
    Path(directory).mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "tests.pause", str(directory), moment, str(n), *map(str, args)]
    return subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"}, **popen)


def wait_paused(proc: subprocess.Popen, directory: Path, timeout: float = 900) -> int | None:
    """The paused process's pid once it has paused; None if the command ended first (it never
    reached the moment). ``timeout`` guards against a hang; it is not the moment waited for."""
    path = Path(directory) / PAUSED
    deadline = time.monotonic() + timeout
    while not path.exists():
        if proc.poll() is not None:
            return None
        assert time.monotonic() < deadline, f"never paused: {proc.args}"
        time.sleep(0.02)
    return int(path.read_text())


def release(directory: Path) -> None:
    (Path(directory) / RELEASE).write_text("")


def install(spec: str) -> None:
    """Instrument this process for ``spec`` (DIR|MOMENT|N); a second call does nothing."""
    if _installed:
        return
    _installed.append(spec)
    directory, moment, n = spec.split("|")
    count = [0]

    def hit() -> None:
        count[0] += 1
        if count[0] == int(n):
            _pause(Path(directory))

    _PATCHES[moment](hit)


def _pause(directory: Path) -> None:
    tmp = directory / f".{PAUSED}.{os.getpid()}"
    tmp.write_text(f"{os.getpid()}\n")
    os.rename(tmp, directory / PAUSED)
    while not (directory / RELEASE).exists():
        time.sleep(0.02)


def _before(owner, name: str, hit, when=lambda *a, **k: True) -> None:
    real = getattr(owner, name)

    def patched(*args, **kwargs):
        if when(*args, **kwargs):
            hit()
        return real(*args, **kwargs)

    setattr(owner, name, patched)


def _after_write_run(hit, finished: bool) -> None:
    from listcopy import checkpoint

    real = checkpoint.write_run

    def patched(run_dir, record, *args, **kwargs):
        real(run_dir, record, *args, **kwargs)
        if not finished or record.get("status") in ("done", "failed"):
            hit()

    checkpoint.write_run = patched


def _store(name: str):
    def patch(hit) -> None:
        from listcopy.sweep.store import Store

        _before(Store, name, hit)
    return patch


def _is_file(fd, *args) -> bool:
    return stat.S_ISREG(os.fstat(fd).st_mode)


_PATCHES = {
    "fsync": lambda hit: _before(os, "fsync", hit, when=_is_file),
    "rename": lambda hit: _before(os, "replace", hit),
    "checkpoint": lambda hit: _after_write_run(hit, finished=False),
    "finished": lambda hit: _after_write_run(hit, finished=True),
    "group": lambda hit: _GROUP_HITS.append(hit),
    "start": _store("start"),
    "record": _store("finish"),
}
_GROUP_HITS: list = []


def train_group(task):
    """A sweep worker's ``train_group``, instrumented as the driver was (through ``ENV``)."""
    from listcopy.sweep.worker import train_group as real

    install(os.environ[ENV])
    for hit in _GROUP_HITS:
        hit()
    return real(task)


def main(argv: list[str]) -> int:
    directory, moment, n, *args = argv
    if moment not in _PATCHES:
        raise SystemExit(f"unknown moment {moment!r}: one of {', '.join(_PATCHES)}")
    os.environ[ENV] = f"{Path(directory).resolve()}|{moment}|{n}"
    install(os.environ[ENV])
    import listcopy.sweep.local as local

    local.train_group = train_group  # what the sweep's worker processes run (spawned: by name)
    from listcopy.cli import main as listcopy

    return listcopy(args)


if __name__ == "__main__":  # run as tests.pause, so that worker processes find the same module
    from tests import pause

    sys.exit(pause.main(sys.argv[1:]))
