"""Building and loading the CPU kernel: compiled once per shape and machine, cached privately.

``load(shape)`` compiles kernel.c with the shape's header (kernel.py) using the system's C compiler
(``$CC``, else ``cc``) into ``~/.cache/listcopy/kernels`` (or ``$XDG_CACHE_HOME/listcopy/kernels``)
and loads it with ctypes; no torch headers, so a build takes about a second. Where no compiler
works it returns None with a one-line notice, and the engine trains with torch.

What is loaded is trusted only as far as it is private: the cache folders are created 0700 and
used only while they are owned by this user and writable by nobody else, and a cached library only
while it is a regular file with the same owner, not writable by group or others. Otherwise the
kernel is built in a fresh private temporary folder (``tempfile.mkdtemp``), loaded and the folder
removed. A cached library that does not load or lacks a symbol is rebuilt. A build is fsynced
before it is renamed into place, and loaded from where it was built (a name this process has not
loaded before).
"""

from __future__ import annotations

import ctypes
import hashlib
import logging
import os
import platform
import shutil
import stat
import subprocess
import tempfile
from pathlib import Path

from .kernel import Kernel, KernelShape, source_path

log = logging.getLogger("listcopy")

FLAG_SETS = (
    ["-O3", "-march=native"],
    ["-O3", "-mcpu=native"],
    ["-O3"],
)
COMMON_FLAGS = ["-std=c11", "-fPIC", "-shared", "-ffp-contract=fast", "-fno-math-errno",
                "-fno-trapping-math", "-D_POSIX_C_SOURCE=200809L", "-D_ISOC11_SOURCE"]
LIBS = ["-lm", "-lpthread"]
_loaded: dict[str, Kernel | None] = {}  # memo per build key (ctypes libraries stay loaded)


def cache_dir(root: Path | None = None) -> Path:
    """Where built kernels are kept: ``root`` (default ``$XDG_CACHE_HOME`` or ``~/.cache``)
    / listcopy / kernels."""
    if root is None:
        root = Path(os.environ.get("XDG_CACHE_HOME")
                    or os.path.join(os.path.expanduser("~"), ".cache"))
    return root / "listcopy" / "kernels"


def lanes() -> int:
    """Sequences per SIMD group: 16 with AVX-512, else 8."""
    try:
        with open("/proc/cpuinfo") as fh:
            return 16 if " avx512f" in fh.read() else 8
    except OSError:
        return 8


def c_compiler() -> str:
    """The C compiler kernels are built with: ``$CC``, else ``cc``."""
    return os.environ.get("CC") or "cc"


def reason(err: BaseException) -> str:
    """An error's first line (its type where it has no message), for a one-line notice."""
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def _machine_key() -> str:
    """The CPU (model and feature flags): -march=native code must not run on another machine."""
    info = platform.machine()
    try:
        with open("/proc/cpuinfo") as fh:
            info += "".join(sorted({ln for ln in fh if ln.startswith(("model name", "flags"))}))
    except OSError:
        info += platform.processor()
    return info


def build_key(header: str, compiler: str, c_file: Path | None = None) -> str:
    """Names one build: the source, the shape header, the compiler and the machine."""
    text = (c_file or source_path()).read_text()
    return hashlib.sha256((text + header + compiler + _machine_key()).encode()).hexdigest()[:24]


def load(shape: KernelShape, lanes_: int | None = None, *, fresh: bool = False,
         cache_root: Path | None = None) -> Kernel | None:
    """The compiled kernel for ``shape``, building it if needed; None (with a one-line notice)
    where no C compiler works. ``fresh``: ignore what this process has loaded already;
    ``cache_root``: another cache root than the default (see :func:`cache_dir`)."""
    header = shape.header(lanes_ or lanes())
    cc = c_compiler()
    key = build_key(header, cc)
    if key in _loaded and not fresh:
        return _loaded[key]
    kernel = None
    try:
        kernel = _load_or_build(shape, header, key, cc, cache_dir(cache_root))
    except (OSError, RuntimeError, AttributeError) as err:
        log.warning("listcopy: no compiled CPU kernel (%s); training with the torch engine",
                    reason(err))
    if not fresh:
        _loaded[key] = kernel
    return kernel


def _load_or_build(shape: KernelShape, header: str, key: str, compiler: str,
                   directory: Path) -> Kernel:
    if shutil.which(compiler) is None and not _usable(directory / f"lc_{key}.so"):
        raise RuntimeError(f"C compiler {compiler!r} not found")
    if not private_dir(directory, create=True):  # build where nobody else can write, then drop it
        tmp = Path(tempfile.mkdtemp(prefix="listcopy-kernel-"))
        try:
            return Kernel(ctypes.CDLL(str(build(header, compiler, tmp))), shape)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    target = directory / f"lc_{key}.so"
    if _usable(target):
        try:
            return Kernel(ctypes.CDLL(str(target)), shape)
        except (OSError, AttributeError) as err:  # truncated, not a library, a symbol missing
            log.info("listcopy: rebuilding the cached kernel %s (%s)", target, err)
    with tempfile.TemporaryDirectory(dir=directory) as staging:
        built = build(header, compiler, Path(staging))
        kernel = Kernel(ctypes.CDLL(str(built)), shape)  # a name not loaded before
        _fsync(built)
        os.replace(built, target)
        _fsync(directory)
    return kernel


def build(header: str, compiler: str, directory: Path, c_file: Path | None = None) -> Path:
    """Compile ``c_file`` (default kernel.c) with ``header`` into ``directory``/kernel.so; the
    compiler reads the .c file where it is, so its messages carry that file's line numbers."""
    if shutil.which(compiler) is None:
        raise RuntimeError(f"C compiler {compiler!r} not found")
    shape_h = directory / "shape.h"
    shape_h.write_text(header)
    out = directory / "kernel.so"
    errors = "failed"
    for flags in FLAG_SETS:
        cmd = [compiler, *flags, *COMMON_FLAGS, "-include", str(shape_h),
               str(c_file or source_path()), "-o", str(out), *LIBS]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode == 0:
            return out
        errors = _first_error(proc.stderr) or errors
    raise RuntimeError(f"{compiler} failed: {errors}")


def _first_error(stderr: str) -> str:
    """The compiler's first error line (``file:line:col: error: ...``), else its last line."""
    lines = [ln for ln in stderr.strip().splitlines() if ln.strip()]
    errors = [ln for ln in lines if ": error:" in ln or ": fatal error:" in ln]
    return (errors or lines or [""])[0].strip()


def private_dir(directory: Path, *, create: bool = False) -> bool:
    """Whether ``directory`` and the ``listcopy`` folder above it are directories owned by this
    user and writable by nobody else; with ``create``, missing ones are made first (mode 0700)."""
    for folder in (directory.parent, directory):
        try:
            if create:
                folder.parent.mkdir(parents=True, exist_ok=True)
                folder.mkdir(mode=0o700, exist_ok=True)
            st = os.stat(folder)
        except OSError:
            return False
        if not stat.S_ISDIR(st.st_mode) or not _private(st):
            return False
    return True


def _usable(path: Path) -> bool:
    """A regular file (not a link) owned by this user and writable by nobody else."""
    try:
        st = os.lstat(path)
    except OSError:
        return False
    return stat.S_ISREG(st.st_mode) and _private(st)


def _private(st: os.stat_result) -> bool:
    owner = os.getuid() if hasattr(os, "getuid") else st.st_uid
    return st.st_uid == owner and not st.st_mode & (stat.S_IWGRP | stat.S_IWOTH)


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
