"""A full disk and a read-only output directory: one clear line, exit non-zero, and the previous
checkpoint intact. Uses a real 256 KiB tmpfs and a real read-only bind mount (needs root, as CI is)."""

import os
import shutil
import subprocess
import sys
from contextlib import contextmanager

import pytest
import torch

from listcopy.checkpoint import MODEL_FILE, load, load_tensors, read_run_json

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="mounting a tmpfs needs root")
ARGS = ["--set", "task.n_digits=20", "--set", "train.batch_size=32", "--set", "train.eval_every=20",
        "--set", "train.checkpoint_every=20", "--quiet"]


def listcopy(*args):
    return subprocess.run([sys.executable, "-m", "listcopy.cli", *args], capture_output=True,
                          text=True, timeout=900)


@contextmanager
def mounted(target, *options):
    target.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", *options, str(target)], check=True)
    try:
        yield target
    finally:
        subprocess.run(["umount", "-l", str(target)], check=False)


def test_disk_full_keeps_the_previous_checkpoint(tmp_path, tally):
    with mounted(tmp_path / "small", "-t", "tmpfs", "-o", "size=256k", "tmpfs") as disk:
        first = listcopy("train", *ARGS, "--set", "train.max_steps=40", "--out", str(disk / "r"))
        assert first.returncode == 0, first.stderr
        before, _ = load_tensors(disk / "r" / MODEL_FILE)
        # fill the disk so the next checkpoint cannot be written
        with open(disk / "filler", "wb", buffering=0) as fh:
            try:
                while True:
                    fh.write(b"\0" * 4096)
            except OSError:
                pass
        result = listcopy("train", *ARGS, "--set", "train.max_steps=200", "--out", str(disk / "r"),
                          "--resume")
        tally["disk-full runs refused cleanly"] += 1
        assert result.returncode != 0
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and "No space left on device" in lines[0], result.stderr
        assert "Traceback" not in result.stderr
        after, _ = load_tensors(disk / "r" / MODEL_FILE)
        assert all(torch.equal(before[k], after[k]) for k in before)
        assert read_run_json(disk / "r")["step"] == 40
        load(disk / "r")
        assert not list((disk / "r").glob(".*.tmp"))


def test_read_only_output_directory(tmp_path, tally):
    src = tmp_path / "src"
    done = listcopy("train", *ARGS, "--set", "train.max_steps=40", "--out", str(src / "r"))
    assert done.returncode == 0, done.stderr
    ro = tmp_path / "ro"
    with mounted(ro, "--bind", str(src)):
        subprocess.run(["mount", "-o", "remount,ro,bind", str(ro)], check=True)
        for args in (["--out", str(ro / "new")], ["--out", str(ro / "r"), "--resume",
                                                  "--set", "train.max_steps=200"]):
            result = listcopy("train", *ARGS, "--set", "train.max_steps=40", *args)
            tally["read-only runs refused cleanly"] += 1
            assert result.returncode != 0
            lines = result.stderr.strip().splitlines()
            assert len(lines) == 1 and "Read-only file system" in lines[0], result.stderr
        assert read_run_json(ro / "r")["step"] == 40
        assert not (src / "new").exists()
    shutil.rmtree(src)
