"""Building and loading the CPU kernel: the torch fallback without a compiler, where the cache
cannot be written, and (issue 12) what is trusted: private cache folders, libraries owned by this
user and writable by nobody else, rebuilt when broken, fsynced before they are renamed into place.
"""

import ctypes
import logging
import os
import re
import shutil
import stat
import subprocess
import tempfile
from pathlib import Path

import pytest

from listcopy.engine import Ensemble, kernel_build
from listcopy.engine.kernel import LAYER_PARAMS, MODEL_PARAMS, SYMBOLS, Mode, source_path

from .helpers import needs_kernel, small, state_dicts


def test_no_compiler_falls_back_to_torch_with_a_notice(tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("CC", str(tmp_path / "no-such-cc"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    config = small()
    with caplog.at_level(logging.WARNING, logger="listcopy"):
        ens = Ensemble(config, state_dicts(config, [0], False))
    assert ens.backend == "torch"
    notices = [r.getMessage() for r in caplog.records]
    assert len(notices) == 1 and "torch engine" in notices[0] and "\n" not in notices[0]
    with pytest.raises(ValueError, match="cannot train"):
        Ensemble(config, state_dicts(config, [0], False), backend="kernel")


@needs_kernel
def test_kernel_builds_where_the_cache_cannot_be_written(tmp_path, monkeypatch):
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("")
    monkeypatch.setenv("XDG_CACHE_HOME", str(blocker))
    config = small(n_layers=1)  # a shape no other test builds in this process
    assert Ensemble(config, state_dicts(config, [0], False)).backend == "kernel"


# ---- issue 12: what is loaded is private, broken builds are rebuilt, builds land atomically ------

PLANTED = r"""
#include <stdio.h>
#include <stdlib.h>
__attribute__((constructor)) static void planted(void) {
    const char *mark = getenv("LC_PLANTED_MARK");
    FILE *f = mark ? fopen(mark, "w") : NULL;
    if (f) fclose(f);
}
int lc_run(void *a, int mode) { return 0; }
int lc_work_bytes(void) { return 0; }
"""


def kernel_target(config, root):
    """Where the kernel for ``config`` is cached under the cache root ``root``."""
    shape = Ensemble(config, state_dicts(config, [0], False), backend="torch").kernel_shape()
    key = kernel_build.build_key(shape.header(kernel_build.lanes()), os.environ.get("CC") or "cc")
    return kernel_build.cache_dir(root) / f"lc_{key}.so"


def plant(path, tmp_path, source=PLANTED):
    """A library at ``path`` whose constructor, when loaded, creates $LC_PLANTED_MARK."""
    path.parent.mkdir(parents=True, exist_ok=True)
    c_file = tmp_path / "planted.c"
    c_file.write_text(source)
    subprocess.run(["cc", "-shared", "-fPIC", str(c_file), "-o", str(path)], check=True)


def someone_else_owns(path, monkeypatch):
    """Make ``path`` another user's: really (chown) as root, else by looking as another uid."""
    if os.getuid() == 0:
        os.chown(path, 65534, 65534)
    else:
        uid = os.getuid() + 1
        monkeypatch.setattr(os, "getuid", lambda: uid)


@pytest.fixture(autouse=True)
def _nothing_loaded_yet(monkeypatch):
    """Each test sees the cache as a new process would (not this process's loaded kernels)."""
    monkeypatch.setattr(kernel_build, "_loaded", {})


@pytest.fixture
def mark(tmp_path, monkeypatch):
    path = tmp_path / "planted-ran"
    monkeypatch.setenv("LC_PLANTED_MARK", str(path))
    return path


@needs_kernel
def test_an_unusable_cache_builds_in_a_fresh_private_folder_not_a_shared_one(tmp_path, monkeypatch,
                                                                              mark):
    """The old fallback, $TMPDIR/listcopy-kernels-<uid>, loaded whatever another user put there."""
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("")
    monkeypatch.setenv("XDG_CACHE_HOME", str(blocker))
    shared = tmp_path / "shared-tmp"
    shared.mkdir(mode=0o777)
    monkeypatch.setattr(tempfile, "tempdir", str(shared))
    config = small(n_layers=4)
    target = kernel_target(config, None)
    plant(shared / f"listcopy-kernels-{os.getuid()}" / target.name, tmp_path)
    made = []
    real_mkdtemp = tempfile.mkdtemp
    monkeypatch.setattr(tempfile, "mkdtemp",
                        lambda *a, **k: made.append(real_mkdtemp(*a, **k)) or made[-1])
    assert Ensemble(config, state_dicts(config, [0], False)).backend == "kernel"
    assert not mark.exists()
    assert made and all(not os.path.exists(d) for d in made)  # built there, then removed


@needs_kernel
@pytest.mark.parametrize("who", ["folder-writable-by-others", "file-writable-by-others",
                                 "file-of-another-user", "symlink"])
def test_a_cached_library_that_is_not_private_is_never_loaded(who, tmp_path, monkeypatch, mark):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    config = small(n_layers=5)
    target = kernel_target(config, None)
    if who == "symlink":
        plant(tmp_path / "elsewhere.so", tmp_path)
        target.parent.mkdir(parents=True)
        target.symlink_to(tmp_path / "elsewhere.so")
    else:
        plant(target, tmp_path)
    if who == "folder-writable-by-others":
        os.chmod(target.parent, 0o777)
    elif who == "file-writable-by-others":
        os.chmod(target, 0o666)
    elif who == "file-of-another-user":
        someone_else_owns(target, monkeypatch)
    assert Ensemble(config, state_dicts(config, [0], False)).backend == "kernel"
    assert not mark.exists()


@needs_kernel
def test_cache_folders_are_created_private(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    config = small(n_layers=6)
    assert Ensemble(config, state_dicts(config, [0], False)).backend == "kernel"
    target = kernel_target(config, None)
    for folder in (target.parent, target.parent.parent):
        assert stat.S_IMODE(os.stat(folder).st_mode) == 0o700, folder
    assert target.stat().st_size > 0


@needs_kernel
@pytest.mark.parametrize("broken", ["empty", "garbage", "no-symbols"])
def test_a_broken_cached_library_is_rebuilt(broken, tmp_path, monkeypatch):
    """Not "fall back to torch from now on" (a 0-byte file made every later run 30x slower)."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    config = small(n_layers=7 + ["empty", "garbage", "no-symbols"].index(broken))
    target = kernel_target(config, None)
    target.parent.mkdir(parents=True, mode=0o700)
    if broken == "no-symbols":
        plant(target, tmp_path, "int something_else(void) { return 0; }\n")
    else:
        target.write_bytes(b"" if broken == "empty" else b"\x7fELF not really")
    assert Ensemble(config, state_dicts(config, [0], False)).backend == "kernel"
    copy = tmp_path / "copy.so"  # (this process has loaded the broken one under target's name)
    shutil.copy(target, copy)
    lib = ctypes.CDLL(str(copy))  # the cache now holds a real kernel
    assert all(hasattr(lib, name) for name in SYMBOLS)


@needs_kernel
@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="names open files through /proc")
def test_a_build_is_fsynced_before_it_is_renamed_into_place(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    events = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd):
        events.append(("fsync", os.readlink(f"/proc/self/fd/{fd}")))
        return real_fsync(fd)

    def replace(src, dst):
        events.append(("replace", str(src), str(dst)))
        return real_replace(src, dst)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    config = small(n_layers=10)
    assert Ensemble(config, state_dicts(config, [0], False)).backend == "kernel"
    target = str(kernel_target(config, None))
    renames = [e for e in events if e[0] == "replace" and e[2] == target]
    assert len(renames) == 1
    at = events.index(renames[0])
    assert ("fsync", renames[0][1]) in events[:at]  # the file, before its rename
    assert ("fsync", str(Path(target).parent)) in events[at:]  # then the folder


@needs_kernel
def test_compiler_errors_carry_the_c_files_own_line_numbers(tmp_path):
    lines = source_path().read_text().splitlines()
    at = next(i for i, line in enumerate(lines) if "static void forward(" in line) + 1
    lines.insert(at, "    this is not C;")
    broken = tmp_path / "kernel.c"
    broken.write_text("\n".join(lines) + "\n")
    shape = Ensemble(small(), state_dicts(small(), [0], False), backend="torch").kernel_shape()
    build_dir = tmp_path / "build"
    build_dir.mkdir()
    with pytest.raises(RuntimeError, match=rf"kernel\.c:{at + 1}:"):
        kernel_build.build(shape.header(8), "cc", build_dir, c_file=broken)


def test_the_shape_header_is_defines_only_and_the_modes_mirror_the_c_enum():
    """One line per constant: 16 sizes and knobs, a source and an offset per parameter kind, seven
    row tables, nothing else (the C stays in kernel.c)."""
    shape = Ensemble(small(), state_dicts(small(), [0], False), backend="torch").kernel_shape()
    header = shape.header(8).strip().splitlines()
    assert header[0].startswith("/*") and all(line.startswith("#define ") for line in header[1:])
    assert len(header) == 1 + 16 + 2 * (len(MODEL_PARAMS) + len(LAYER_PARAMS)) + 7
    enum = re.search(r"enum lc_mode \{([^}]*)\}", source_path().read_text()).group(1)
    in_c = {name.strip(): int(value) for name, value in
            (item.split("=") for item in enum.split(","))}
    assert {f"LC_{m.name}": m.value for m in Mode} == {k: v for k, v in in_c.items()
                                                       if k != "LC_N_MODES"}
    assert in_c["LC_N_MODES"] == len(Mode)
