"""kill -9 a real training run at chosen moments (inside checkpoint writes too), reached by
construction (tests/pause.py: the process waits there to be killed); each time the run directory
holds only complete files, and --resume finishes with the uninterrupted run's weights."""

import signal
import subprocess
import sys

import pytest
import torch

from listcopy.checkpoint import MODEL_FILE, RUN_FILE, STATE_FILE, load, load_tensors, read_run_json
from tests import pause

# (moment, n) per kill, counted from each process's start: a checkpoint writes three files
# (train state, model, run.json), so fsync 2 is the first checkpoint's model not yet on disk (its
# train state in place, no run.json yet), rename 3 its run.json complete but not in place, ...
KILLS = [("fsync", 2), ("rename", 3), ("checkpoint", 2), ("fsync", 7), ("rename", 11),
         ("checkpoint", 5)]
ARGS = ["--set", "task.n_digits=30", "--set", "train.max_steps=600", "--set", "train.eval_every=10",
        "--set", "train.checkpoint_every=10", "--set", "train.batch_size=64", "--quiet"]


def _train(out, *extra):
    cmd = [sys.executable, "-m", "listcopy.cli", "train", *ARGS, "--out", str(out), *extra]
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def _assert_complete(run_dir):
    """Every file present is a complete, loadable one; no temporary is mistaken for a checkpoint."""
    if (run_dir / RUN_FILE).exists():
        read_run_json(run_dir)
        load(run_dir)
    if (run_dir / STATE_FILE).exists():
        load_tensors(run_dir / STATE_FILE)


@pytest.mark.slow
def test_training_survives_repeated_kill_9(tmp_path, tally):
    reference = _train(tmp_path / "ref")
    assert reference.wait(timeout=1200) == 0, reference.stderr.read()

    run = tmp_path / "killed"
    steps_at_kill = []
    for i, (moment, n) in enumerate(KILLS):
        where = tmp_path / f"pause{i}"
        proc = pause.start(where, moment, n, "train", *ARGS, "--out", run, "--resume")
        assert pause.wait_paused(proc, where) == proc.pid, proc.communicate()
        proc.send_signal(signal.SIGKILL)
        proc.communicate()
        _assert_complete(run)
        steps_at_kill.append(read_run_json(run)["step"] if (run / RUN_FILE).exists() else 0)
        tally["training kills survived"] += 1
    assert steps_at_kill == sorted(steps_at_kill) and steps_at_kill[-1] > 0, steps_at_kill
    final = _train(run, "--resume")
    assert final.wait(timeout=1200) == 0, final.stderr.read()
    assert read_run_json(run)["step"] == 600
    assert max(steps_at_kill) < 600, steps_at_kill  # every kill interrupted the run
    a, _ = load_tensors(run / MODEL_FILE)
    b, _ = load_tensors(tmp_path / "ref" / MODEL_FILE)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert not list(run.glob(".*.tmp"))  # stale temporaries cleaned on resume
