"""A run folder is ours for the whole run (run.lock), and SIGTERM ends a command in one line
with status 143, everything it finished kept. Each moment is reached by construction: the
process waits there (tests/pause.py) until the test has acted."""

import signal

import pytest

from listcopy.checkpoint import LOCK_FILE, MODEL_FILE, RUN_FILE, load, read_run_json
from tests import pause
from tests.conftest import run_cli

TRAIN = ["train", "--set", "task.n_digits=10", "--set", "train.batch_size=16", "--set",
         "train.max_steps=100", "--set", "train.eval_every=50", "--set",
         "train.checkpoint_every=50", "--set", "train.early_stop_acc=1.0", "--quiet"]


def one_line(stderr: str) -> str:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in stderr, stderr
    return lines[0]


@pytest.mark.parametrize("kernel_cache", ["cold", "warm"])
def test_a_second_train_into_a_folder_in_use_is_refused_before_any_checkpoint(
        tmp_path, tally, monkeypatch, kernel_cache):
    run = tmp_path / "r"
    if kernel_cache == "cold":  # the first fsync is then the kernel library's: the folder is
        monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))  # taken before the build
    first = pause.start(tmp_path / "p", "fsync", 1, *TRAIN, "--out", run)  # before its first
    try:                                                                  # checkpoint is on disk
        assert pause.wait_paused(first, tmp_path / "p") == first.pid, first.communicate()
        assert not (run / RUN_FILE).exists()
        for extra in ((), ("--resume",)):
            second = run_cli(*TRAIN, "--out", str(run), *extra)
            assert second.returncode == 1, second
            line = one_line(second.stderr)
            assert f"another listcopy process (pid {first.pid}) is training" in line, line
            tally["busy run folders refused"] += 1
        pause.release(tmp_path / "p")
        _, stderr = first.communicate(timeout=600)
        assert first.returncode == 0, stderr
    finally:
        if first.poll() is None:
            first.kill()
    assert read_run_json(run)["step"] == 100
    again = run_cli(*TRAIN, "--out", str(run), "--resume")  # the lock went with its process
    assert again.returncode == 0, again.stderr


def test_sigterm_ends_train_in_one_line_with_143_and_keeps_the_checkpoint(tmp_path, tally):
    run = tmp_path / "r"
    proc = pause.start(tmp_path / "p", "checkpoint", 1, *TRAIN, "--out", run)
    assert pause.wait_paused(proc, tmp_path / "p") == proc.pid, proc.communicate()
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 143, (proc.returncode, stderr)
    assert one_line(stderr) == "listcopy train: terminated (SIGTERM)"
    tally["SIGTERMs ended in one line"] += 1
    assert read_run_json(run)["step"] == 50  # the checkpoint finished before it is kept
    load(run)
    assert (run / MODEL_FILE).exists() and (run / LOCK_FILE).read_text() == ""  # released
    done = run_cli(*TRAIN, "--out", str(run), "--resume")
    assert done.returncode == 0, done.stderr
    assert read_run_json(run)["step"] == 100
