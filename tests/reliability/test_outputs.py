"""Outputs that are not plain new files: devices, FIFOs, symlinks, directories, loops, long names.

Each is written through, replaces the file a link points to, or is refused with one line (exit 2)
before any work: never replaced by a regular file, never half-written (listcopy/files.py's table).
"""

import contextlib
import io
import json
import os
import stat
import subprocess
import sys
import threading

import pytest

from listcopy import cli
from tests.conftest import FIXTURES

SEED_PT = str(FIXTURES / "seed_default_1000.pt")
ROOT = os.geteuid() == 0
# one fast command per kind of output: (argv before the output path, the option)
WRITERS = {
    "export": (["export", SEED_PT, "--out"]),
    "analyze": (["analyze", SEED_PT, "--only", "parameters", "--quiet", "--json"]),
    "report": (["report", SEED_PT, "--only", "parameters", "--no-umap", "--quiet", "--out"]),
}


def main(*argv):
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = cli.main([str(a) for a in argv])
    return code, out.getvalue(), err.getvalue()


def refused(code, err, *needles):
    assert code == 2, (code, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    for needle in needles:
        assert needle in lines[0], lines[0]


@pytest.mark.skipif(not ROOT, reason="mknod needs root")
@pytest.mark.parametrize("command", sorted(WRITERS))
def test_a_character_device_is_written_through_never_replaced(tmp_path, tally, command):
    null = tmp_path / "null"
    os.mknod(null, 0o666 | stat.S_IFCHR, os.makedev(1, 3))  # a private /dev/null
    code, _, err = main(*WRITERS[command], null)
    tally["odd outputs tried"] += 1
    assert code == 0, err
    assert stat.S_ISCHR(os.lstat(null).st_mode), "the device was replaced by a regular file"
    assert os.listdir(tmp_path) == ["null"]  # no temporary left beside it


class FifoReader:
    """Reads a FIFO until the test is done with it (holding a writer end, so that a read before
    listcopy opens it waits rather than ends)."""

    def __init__(self, path):
        self.path, self.data = path, b""
        os.mkfifo(path)
        self.rfd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
        os.set_blocking(self.rfd, True)
        self.wfd = os.open(path, os.O_WRONLY)
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self):
        while chunk := os.read(self.rfd, 1 << 16):
            self.data += chunk

    def close(self) -> bytes:
        os.close(self.wfd)
        self.thread.join(timeout=60)
        os.close(self.rfd)
        return self.data


@pytest.mark.parametrize("command", ["analyze", "export"])
def test_a_fifo_gets_the_bytes_and_stays_a_fifo(tmp_path, tally, command):
    fifo = tmp_path / "pipe"
    reader = FifoReader(fifo)
    try:
        code, _, err = main(*WRITERS[command], fifo)
    finally:
        data = reader.close()
    tally["odd outputs tried"] += 1
    assert code == 0, err
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode), "the FIFO was replaced by a regular file"
    if command == "analyze":
        assert "parameters" in json.loads(data)
    else:
        assert data[:2] == b"PK"  # torch.save's zip, whole
        reference = tmp_path / "ref.pt"
        assert main("export", SEED_PT, "--out", reference)[0] == 0
        assert data == reference.read_bytes()


def test_a_symlink_to_a_file_replaces_the_file_not_the_link(tmp_path, tally):
    real = tmp_path / "real.json"
    real.write_text("old")
    link = tmp_path / "link.json"
    link.symlink_to(real.name)
    code, _, err = main(*WRITERS["analyze"], link)
    tally["odd outputs tried"] += 1
    assert code == 0, err
    assert link.is_symlink() and os.readlink(link) == real.name
    assert "parameters" in json.loads(real.read_text())
    dangling = tmp_path / "dangling.pt"
    dangling.symlink_to("made-by-listcopy.pt")
    assert main(*WRITERS["export"], dangling)[0] == 0
    assert dangling.is_symlink() and (tmp_path / "made-by-listcopy.pt").stat().st_size > 1000


def test_a_link_to_standard_output_is_written_through(tmp_path, tally):
    """/dev/stdout names the process's open standard output; here a private link to it (a test
    must never risk the machine's own /dev/stdout)."""
    link = tmp_path / "stdout"
    link.symlink_to("/proc/self/fd/1")
    for target in ("pipe", "file"):
        out = tmp_path / "captured.txt"
        with open(out, "wb") as fh:
            stdout = subprocess.PIPE if target == "pipe" else fh
            result = subprocess.run(
                [sys.executable, "-m", "listcopy.cli", *WRITERS["analyze"], str(link)],
                stdout=stdout, stderr=subprocess.PIPE, timeout=300)
        tally["odd outputs tried"] += 1
        assert result.returncode == 0, result.stderr
        assert link.is_symlink(), "the link was replaced by a regular file"
        text = result.stdout.decode() if target == "pipe" else out.read_text()
        summary, _, json_line = text.rstrip("\n").rpartition("\n")
        assert summary.strip() and "parameters" in json.loads(json_line)


def test_a_directory_is_refused_in_one_line_before_any_work(tmp_path, tally, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for command, argv in WRITERS.items():
        for out in (".", str(tmp_path)):
            code, _, err = main(*argv, out)
            tally["odd outputs tried"] += 1
            refused(code, err, "is a directory")
    assert os.listdir(tmp_path) == []


def test_symlink_loops_are_named_as_such(tmp_path, tally):
    loop = tmp_path / "loop"
    loop.symlink_to("loop")
    for out in (loop, loop / "x.pt"):
        code, _, err = main(*WRITERS["export"], out)
        tally["odd outputs tried"] += 1
        refused(code, err, "symlink loop")
    assert loop.is_symlink() and os.readlink(loop) == "loop"
    assert sorted(os.listdir(tmp_path)) == ["loop"]


@pytest.mark.parametrize("length", [240, 250, 255])
def test_legal_names_up_to_255_bytes_are_written(tmp_path, tally, length):
    name = "m" * (length - 3) + ".pt"
    code, _, err = main(*WRITERS["export"], tmp_path / name)
    tally["odd outputs tried"] += 1
    assert code == 0, err
    assert os.listdir(tmp_path) == [name]
    code, _, err = main(*WRITERS["export"], tmp_path / ("m" * 254 + ".pt"))
    refused(code, err, "too long")


def test_report_checks_the_png_folder_before_writing_the_html(tmp_path, tally, monkeypatch):
    html = tmp_path / "r.html"
    not_a_dir = tmp_path / "figures"
    not_a_dir.write_text("a file")
    code, _, err = main(*WRITERS["report"], html, "--png", not_a_dir)
    tally["odd outputs tried"] += 1
    refused(code, err, "not a directory")
    assert not html.exists()
    monkeypatch.setenv("BROWSER_PATH", str(tmp_path / "no-chromium"))
    code, _, err = main(*WRITERS["report"], html, "--png", tmp_path / "pngs")
    refused(code, err, "BROWSER_PATH")
    assert not html.exists() and not (tmp_path / "pngs").exists()
