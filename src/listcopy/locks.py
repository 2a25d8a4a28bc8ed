"""Folder locks: one writer per run directory (``run.lock``) or sweep directory (``sweep.lock``),
held for the whole run.

A lock is ``flock`` on a file in the folder that holds the owner's pid. The kernel releases it
when the process ends, however it ends (``kill -9`` included), so a lock file left behind never
blocks anyone; a second writer is refused at once with one line naming the first one's pid.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

from .errors import Failure


class FolderLock:
    """``with FolderLock(path, busy):`` holds the lock file ``path`` exclusively; where another
    process holds it, ``busy(pid)`` (its pid as written there, or "?") is the error raised."""

    def __init__(self, path: str | Path, busy: Callable[[str], Failure]):
        self.path, self.busy = Path(path), busy
        self.fh = None

    def __enter__(self) -> "FolderLock":
        import fcntl

        fh = open(self.path, "a+")
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.seek(0)
            holder = fh.read().strip() or "?"
            fh.close()
            raise self.busy(holder) from None
        fh.seek(0)
        fh.truncate()
        fh.write(f"{os.getpid()}\n")
        fh.flush()
        self.fh = fh
        return self

    def __exit__(self, *exc) -> None:
        assert self.fh is not None
        self.fh.seek(0)
        self.fh.truncate()
        self.fh.close()  # releases the lock
        self.fh = None


def in_use(path: str | Path) -> bool:
    """Whether a process holds the lock file ``path`` (False where there is no such file; True
    where it cannot be told, so that nothing is taken for abandoned that may not be)."""
    import fcntl

    try:
        with open(path, "rb") as fh:
            try:
                fcntl.flock(fh, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except BlockingIOError:
                return True
            fcntl.flock(fh, fcntl.LOCK_UN)
            return False
    except FileNotFoundError:
        return False
    except OSError:
        return True


def ensure_open_files(n: int) -> None:
    """Room for ``n`` more open files (a lock each): the soft limit is raised toward the hard
    one if needed; a ``Failure`` if even that is too low."""
    try:
        import resource
    except ImportError:  # not POSIX: nothing to raise
        return
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    needed = n + 256  # the interpreter, torch and the checkpoint being written
    if soft == resource.RLIM_INFINITY or soft >= needed:
        return
    if hard != resource.RLIM_INFINITY and hard < needed:
        raise Failure(f"{n} run directories need {needed} open files (a lock each); this "
                      f"process may open {hard} (ulimit -n): train fewer at once")
    resource.setrlimit(resource.RLIMIT_NOFILE, (needed, hard))
