"""Output files: what a path given as an output is (checked before any work), and how it is
written: atomically where it is a file, through where it is a pipe or a device, never replaced.

    what PATH is                       what a write does
    a new name, a regular file         writes a short temporary name in the same folder, fsyncs
                                       it and renames it over PATH: a kill leaves the old file
                                       or the new one (the folder is made if missing)
    a symlink to a regular file        the same for the file it points to: the link stays
    a symlink to nothing               the file it names is created (atomically, as above)
    a FIFO, a character device         written through, never replaced: a pipe, a terminal or
      (/dev/null, /dev/tty, a pipe)    /dev/null gets the bytes as they are
    /dev/stdout, /dev/fd/N, the file   written through, after what is already there (the file
      standard output goes to          the shell opened, appended to, as ``>>`` would)
    a directory, a socket, a block     refused with one line (``OutputError``, exit 2), before
    device, a symlink loop, a name     any work is done
    too long, a parent that is a file,
    a folder that takes no new file (/proc)

A write through is not atomic (a pipe cannot be renamed): the bytes are made in a private
temporary file first, then copied, so a writer that fails midway sends nothing.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import stat
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

from .config import ConfigError

TEMP_PREFIX, TEMP_SUFFIX = ".lc", ".tmp"  # 15 bytes in all: any legal name has room beside it
_PATH_ERRORS = {errno.ELOOP: "a symlink loop", errno.ENAMETOOLONG: "file name too long",
                errno.ENOTDIR: "a part of it is not a directory"}


class OutputError(ConfigError):
    """An output path that cannot be written as a file (a bad value: exit 2). One line."""


@dataclass(frozen=True)
class Output:
    """Where a write goes: ``path`` (the file a symlink names), and whether it is written
    through (a pipe, a character device, an open file's ``/dev/fd`` name) or replaced."""

    path: Path
    through: bool = False


def check_output(path: str | Path, flag: str = "", *, probe: bool = True) -> Output:
    """What writing to ``path`` means (see the module's table); ``OutputError`` if it cannot be
    a file, or (``probe``) if its folder takes no new file (``check_folder``). ``flag``
    (``--out``) starts the message, so the user sees which option it was."""
    path = Path(path)
    label = f"{flag} {path}" if flag else str(path)
    out = _output(path, label)
    if probe and not out.through:
        check_folder(out.path.parent, label)
    return out


def _output(path: Path, label: str) -> Output:
    """``check_output`` but the probe."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        target = Path(os.path.realpath(path)) if path.is_symlink() else path
        _check_new(target, label)
        return Output(target)
    except OSError as err:
        blocker = file_in_the_way(path) if err.errno == errno.ENOTDIR else None
        why = (f"{blocker} is not a directory" if blocker is not None
               else _PATH_ERRORS.get(err.errno, err.strerror))
        raise OutputError(f"{label}: {why}") from None
    if stat.S_ISDIR(st.st_mode):
        raise OutputError(f"{label}: is a directory; give a file name inside it")
    if stat.S_ISREG(st.st_mode) and _own_stream(path) is None:
        real = Path(os.path.realpath(path))
        try:
            same = os.path.samestat(os.stat(real), st)
        except OSError:
            same = False
        return Output(real) if same else Output(path, through=True)  # not same: /dev/fd/N
    if stat.S_ISREG(st.st_mode) or stat.S_ISFIFO(st.st_mode) or stat.S_ISCHR(st.st_mode):
        return Output(path, through=True)  # our own standard output, a pipe, a device
    kind = "a socket" if stat.S_ISSOCK(st.st_mode) else (
        "a block device" if stat.S_ISBLK(st.st_mode) else "not a regular file")
    raise OutputError(f"{label}: is {kind}; listcopy writes only files, pipes and devices such "
                      "as /dev/null")


def file_in_the_way(path: Path) -> Path | None:
    """The nearest existing ancestor of ``path`` that is not a folder, if any."""
    for parent in path.parents:
        if parent.exists():
            return None if parent.is_dir() else parent
    return None


def check_folder(folder: str | Path, label: str) -> None:
    """A folder files are to be written in (made if missing), checked before any work:
    ``OutputError`` unless its nearest existing ancestor is a folder that takes a new file (a
    probe, removed at once), as /proc, a read-only disk or a folder without permission does not."""
    folder = Path(folder)
    existing = next(p for p in (folder, *folder.parents) if p.exists())
    if not existing.is_dir():
        raise OutputError(f"{label}: {existing} is not a directory")
    try:
        probe_folder(existing)
    except OSError as err:
        raise OutputError(f"{label}: cannot create files in {existing} ({err.strerror})") from None


def probe_folder(folder: Path) -> None:
    """A temporary file created in ``folder`` and removed at once (OSError where it cannot be)."""
    fd, name = tempfile.mkstemp(prefix=TEMP_PREFIX, suffix=TEMP_SUFFIX, dir=folder)
    os.close(fd)
    os.unlink(name)


def _check_new(target: Path, label: str) -> None:
    """A file to be created: its name fits, and its nearest existing ancestor is a folder."""
    missing = [target.name]
    ancestor = target.parent
    while True:
        try:
            st = os.stat(ancestor)
            break
        except FileNotFoundError:
            if ancestor.is_symlink():
                raise OutputError(f"{label}: {ancestor} is a symlink to nothing") from None
            if ancestor == ancestor.parent:
                raise OutputError(f"{label}: no such folder") from None
            missing.append(ancestor.name)
            ancestor = ancestor.parent
        except OSError as err:
            why = _PATH_ERRORS.get(err.errno, err.strerror)
            raise OutputError(f"{label}: {ancestor}: {why}") from None
    if not stat.S_ISDIR(st.st_mode):
        raise OutputError(f"{label}: {ancestor} is not a directory")
    limit = _name_max(ancestor)
    long = [name for name in missing if len(os.fsencode(name)) > limit]
    if long:
        raise OutputError(f"{label}: file name too long ({len(os.fsencode(long[0]))} bytes, "
                          f"at most {limit})")


def _name_max(directory: Path) -> int:
    try:
        return os.pathconf(directory, "PC_NAME_MAX")
    except (OSError, ValueError):
        return 255


def atomic_write(path: str | Path, write: Callable[[Path], None]) -> None:
    """Write ``path`` by ``write(tmp)`` on a temporary file: renamed over a file, copied into a
    pipe or device (see the module's table). ``OutputError`` for what cannot be written."""
    out = check_output(path, probe=False)
    if out.through:
        _write_through(out.path, write)
        return
    target = out.path
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd, tmp_name = tempfile.mkstemp(prefix=TEMP_PREFIX, suffix=TEMP_SUFFIX, dir=target.parent)
    except OSError as err:  # named by the path given, not by the temporary's
        raise OSError(err.errno, err.strerror, str(path)) from None
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        write(tmp)
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(target.parent)


@contextlib.contextmanager
def folder_or_nothing(folder: str | Path) -> Iterator[None]:
    """A block that makes ``folder``: where it fails, a folder that was not there before is
    removed again, with what the block wrote in it."""
    fresh = not Path(folder).exists()
    try:
        yield
    except BaseException:
        if fresh:
            shutil.rmtree(folder, ignore_errors=True)
        raise


def _write_through(path: Path, write: Callable[[Path], None]) -> None:
    """The bytes made in a private temporary file, then appended to ``path`` (never created,
    truncated or renamed: a pipe, a device, a file the shell opened). Where ``path`` is this
    process's own standard output or error (``/dev/stdout``), the bytes go through that stream's
    descriptor, after what was printed before them (flushed first)."""
    with tempfile.TemporaryDirectory(prefix="listcopy-") as scratch:
        tmp = Path(scratch) / "out"
        write(tmp)
        own = _own_stream(path)
        fd = os.dup(own.fileno()) if own else os.open(path, os.O_WRONLY | os.O_APPEND)
        with open(tmp, "rb") as src, open(fd, "wb") as dst:
            shutil.copyfileobj(src, dst)


def _own_stream(path: Path):
    """``sys.stdout`` or ``sys.stderr`` (flushed) where ``path`` is the file it writes to."""
    st = os.stat(path)
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
            if os.path.samestat(os.fstat(stream.fileno()), st):
                return stream
        except (AttributeError, OSError, ValueError):  # replaced (a StringIO), or closed
            continue
    return None


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def fsync_dir(directory: Path) -> None:
    """Flush a folder's entries (a rename in it) to disk, where the system allows it."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
