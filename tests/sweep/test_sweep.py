"""Sweeps end to end on tiny configs: training, skipping finished runs, failures recorded while the
sweep goes on, the lock, a real ``sweep`` process killed with SIGKILL and re-run, and Ray."""

from __future__ import annotations

import fcntl
import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time

import pytest

from listcopy import cli
from listcopy.sweep.results import load_rows
from listcopy.sweep.runner import SweepBusy, _exclusive, run_sweep
from listcopy.sweep.store import DB_FILE

from .conftest import TINY_BASE, assert_one_line_error, run_sweep_cli

GRID = """
seeds = "0-1"
[[specs]]
name = "d8"
[[specs]]
name = "d8_again"          # identical to d8: trained once
[[specs]]
name = "nan"
"train.lr" = 1e4           # a non-finite loss within 50 steps
[[specs]]
name = "two_layers"
"model.n_layers" = 2
"""
BASE = TINY_BASE.replace('device = "cpu"', 'device = "cpu"\nmax_steps = 150')


def results_by_key(out):
    return {r["key"]: (r["status"], r["steps"], r["acc"], r["steps_to_threshold"])
            for r in load_rows(out)}


def test_sweep_trains_records_and_skips_on_rerun(tmp_path, grid_file):
    grid = grid_file(GRID, base=BASE)
    out = tmp_path / "s"
    summary = run_sweep(grid, out, workers=0, progress=False)
    assert (summary.n_entries, summary.n_runs, summary.trained, summary.skipped) == (8, 6, 6, 0)
    assert summary.counts == {"done": 4, "failed": 2, "pending": 0, "running": 0}
    rows = load_rows(out)
    assert len(rows) == 8
    by_name = {}
    for r in rows:
        by_name.setdefault(r["name"], []).append(r)
    assert [r["key"] for r in by_name["d8"]] == [r["key"] for r in by_name["d8_again"]]
    for r in by_name["nan"]:  # recorded as failed, with the reason; the rest went on
        assert r["status"] == "failed" and r["stop_reason"] == "non_finite"
        assert "non-finite loss" in r["error"]
    for r in by_name["d8"] + by_name["two_layers"]:
        assert r["status"] == "done" and r["steps"] == 150 and r["error"] is None
        run_dir = out / r["run_dir"]
        for f in ("model.safetensors", "run.json", "train_state.safetensors"):
            assert (run_dir / f).is_file()
        assert json.loads((run_dir / "run.json").read_text())["metrics"]["acc"] == r["acc"]
    assert (out / "grid.toml").read_text() == grid.read_text()

    before = {r["key"]: r["updated_at"] for r in rows}
    again = run_sweep(grid, out, workers=0, progress=False)
    assert (again.trained, again.skipped) == (0, 6)
    assert {r["key"]: r["updated_at"] for r in load_rows(out)} == before

    retried = run_sweep(grid, out, workers=0, progress=False, retry_failed=True)
    assert (retried.trained, retried.skipped) == (2, 4)
    assert {r["attempts"] for r in load_rows(out) if r["name"] == "nan"} == {2}

    # more seeds on the same directory: only the new runs are trained
    grid.write_text(grid.read_text().replace('seeds = "0-1"', 'seeds = "0-2"'))
    more = run_sweep(grid, out, workers=0, progress=False)
    assert (more.n_runs, more.trained) == (9, 3)
    assert len(load_rows(out)) == 12


def test_an_exception_fails_its_group_and_the_sweep_goes_on(tmp_path, grid_file, monkeypatch):
    import listcopy.training as training

    real = training.train_ensemble

    def flaky(configs, *args, **kwargs):
        if configs[0].model.n_layers == 2:
            raise RuntimeError("boom\nsecond line")
        return real(configs, *args, **kwargs)

    monkeypatch.setattr(training, "train_ensemble", flaky)
    grid = grid_file('seeds = "0-1"\n[axes]\n"model.n_layers" = [1, 2]\n',
                     base="[task]\nn_digits = 10\n[train]\nmax_steps = 50\nbatch_size = 16\n"
                          "eval_every = 25\ndevice = \"cpu\"\n")
    summary = run_sweep(grid, tmp_path / "s", workers=0, progress=False)
    assert summary.counts["done"] == 2 and summary.counts["failed"] == 2
    failed = [r for r in load_rows(tmp_path / "s") if r["status"] == "failed"]
    assert {r["config"].model.n_layers for r in failed} == {2}
    assert all(r["error"] == "RuntimeError: boom second line" for r in failed)


def test_dry_run_lists_groups_and_writes_nothing(tmp_path, grid_file, capsys):
    out = tmp_path / "s"
    assert cli.main(["sweep", str(grid_file(GRID)), "--out", str(out), "--dry-run",
                           "--workers", "2"]) == 0
    text = capsys.readouterr().out
    assert "8 entries, 6 distinct runs (d8 = d8_again trained once)" in text
    assert "3 groups of one shape (2 shapes), 2 workers x 1 thread" in text
    assert text.count("3layer_10dig_8d, 2 runs") == 2 and "2layer_10dig_8d, 2 runs" in text
    assert not out.exists()


def test_a_second_sweep_on_a_directory_is_refused(tmp_path, grid_file, capsys):
    out = tmp_path / "s"
    out.mkdir()
    grid = grid_file(GRID)
    with _exclusive(out):
        with pytest.raises(SweepBusy, match="another sweep"):
            run_sweep(grid, out, workers=0, progress=False)
        assert cli.main(["sweep", str(grid), "--out", str(out), "--quiet"]) == 1
        err = capsys.readouterr().err
        assert len(err.strip().splitlines()) == 1 and f"pid {os.getpid()}" in err
    assert not (out / DB_FILE).exists()


KILL_GRID = """
seeds = "0-1"
[axes]
"model.n_layers" = [1, 2]
"train.max_steps" = [200, 1500]    # short members finish while their group trains on
"""
KILL_BASE = TINY_BASE.replace('device = "cpu"', 'device = "cpu"\nearly_stop_acc = 1.0')


def _statuses(out):
    try:
        conn = sqlite3.connect(f"file:{out / DB_FILE}?mode=ro", uri=True, timeout=5)
        try:
            return dict(conn.execute("SELECT key, status FROM runs").fetchall())
        finally:
            conn.close()
    except sqlite3.Error:
        return {}


def _workers_gone(lock_path, timeout: float = 300) -> bool:
    """Whether every worker of a killed sweep has ended: a blocking exclusive flock on their
    shared lock returns once the last one is gone (``timeout`` guards a hang; it is not the
    moment waited for)."""
    got = threading.Event()

    def take():
        with open(lock_path, "a") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            got.set()
            fcntl.flock(fh, fcntl.LOCK_UN)

    thread = threading.Thread(target=take, daemon=True)
    thread.start()
    return got.wait(timeout)


def test_kill_9_and_rerun_loses_and_duplicates_nothing(tmp_path, grid_file):
    """The kills land at chosen moments by construction (tests/pause.py), never by timing."""
    from tests import pause

    grid = grid_file(KILL_GRID, base=KILL_BASE)
    out = tmp_path / "s"
    sweep = ["sweep", str(grid), "--out", str(out), "--workers", "2", "--quiet"]

    # 1. kill the driver once a run is done and others are training: paused before it records
    #    its second result, so the first is in the database and the others are running
    proc = pause.start(tmp_path / "p1", "record", 2, *sweep)
    assert pause.wait_paused(proc, tmp_path / "p1") == proc.pid, proc.communicate()
    seen = _statuses(out)
    assert list(seen.values()).count("done") == 1 and "running" in seen.values(), seen
    os.kill(proc.pid, signal.SIGKILL)
    proc.communicate(timeout=60)
    finished = {r["key"]: r for r in load_rows(out) if r["status"] == "done"}
    assert len(finished) == 1

    # its workers die with it: the worker lock comes free
    assert _workers_gone(out / "workers.lock"), "worker processes outlived their killed sweep"

    # 2. kill the re-run while it starts up: before it marks its first group as running
    proc = pause.start(tmp_path / "p2", "start", 1, *sweep)
    assert pause.wait_paused(proc, tmp_path / "p2") == proc.pid, proc.communicate()
    assert _statuses(out) == {**{k: "pending" for k in seen if k not in finished},
                              **{k: "done" for k in finished}}  # recovered, nothing started
    os.kill(proc.pid, signal.SIGKILL)
    proc.communicate(timeout=60)

    # 3. the re-run completes
    result = run_sweep_cli("sweep", str(grid), "--out", str(out), "--workers", "2", "--quiet")
    assert result.returncode == 0, result.stderr
    assert "8 runs (8 entries): 8 done, 0 failed" in result.stdout
    rows = load_rows(out)
    assert len(rows) == 8 and len({r["key"] for r in rows}) == 8
    assert all(r["status"] == "done" for r in rows)
    for r in rows:  # results recorded before the kill are kept as they were
        if r["key"] in finished:
            assert r["updated_at"] == finished[r["key"]]["updated_at"]
            assert r["acc"] == finished[r["key"]]["acc"]

    # and they are the results of an uninterrupted sweep
    reference = tmp_path / "ref"
    run_sweep(grid, reference, workers=0, progress=False)
    assert results_by_key(out) == results_by_key(reference)


def test_busy_directory_via_cli_is_one_line(tmp_path, grid_file):
    out = tmp_path / "s"
    out.mkdir()
    with _exclusive(out):
        result = run_sweep_cli("sweep", str(grid_file(GRID)), "--out", str(out), "--quiet")
    assert_one_line_error(result, 1, "another sweep")


def test_ray_backend_on_a_local_cluster(tmp_path, grid_file):
    import ray  # noqa: F401  (the test extra installs it: this test must run, not skip)
    grid = grid_file('seeds = "0-1"\n[axes]\n"model.n_layers" = [1, 2]\n',
                     base="[task]\nn_digits = 10\n[train]\nmax_steps = 100\nbatch_size = 16\n"
                          "eval_every = 50\ncheckpoint_every = 50\ndevice = \"cpu\"\n")
    out = tmp_path / "ray"
    summary = run_sweep(grid, out, backend="ray", workers=2, threads=1, progress=False)
    assert summary.counts["done"] == 4
    from listcopy import load

    for r in load_rows(out):  # checkpoints came back to the driver's directory
        model, config = load(out / r["run_dir"])
        assert config.model.n_layers == r["config"].model.n_layers
    reference = tmp_path / "local"
    run_sweep(grid, reference, workers=0, progress=False)
    assert results_by_key(out) == results_by_key(reference)


WAITING_DRIVER = """
import sys
sys.path.insert(0, {root!r})
import listcopy.sweep.local as local
from tests.sweep import killed_worker
local.train_group = killed_worker.wait_for_release  # what the spawned workers run
from listcopy.cli import main
sys.exit(main(["sweep", {grid!r}, "--out", {out!r}, "--workers", "1", "--quiet"]))
"""


def test_a_killed_worker_ends_the_sweep_with_one_line_and_exit_1(tmp_path, grid_file):
    from pathlib import Path

    from .killed_worker import PID_FILE

    root = str(Path(__file__).resolve().parents[2])
    grid, out = grid_file('seeds = "0"\n'), tmp_path / "s"
    code = WAITING_DRIVER.format(root=root, grid=str(grid), out=str(out))
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, cwd=root,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        deadline = time.monotonic() + 900  # a guard against a hang, not a moment waited for
        while not (out / PID_FILE).exists():
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "the worker never started"
            time.sleep(0.05)
        os.kill(int((out / PID_FILE).read_text()), signal.SIGKILL)  # the worker, waiting
        stdout, stderr = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    result = subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr)
    assert_one_line_error(result, 1, "listcopy sweep: error:", "worker process died")
    assert not (out / "release").exists()  # it never trained: killed while it waited


def test_a_grid_read_from_standard_input_is_saved_as_read(tmp_path):
    """``sweep /dev/stdin``: the grid is read once; grid.toml holds those bytes (it was empty)."""
    text = ('seeds = "0"\n[task]\nn_digits = 10\n[train]\nmax_steps = 50\nbatch_size = 16\n'
            'eval_every = 50\ncheckpoint_every = 50\ndevice = "cpu"\n')
    out = tmp_path / "s"
    result = run_sweep_cli("sweep", "/dev/stdin", "--out", str(out), "--workers", "0", "--quiet",
                           input=text)
    assert result.returncode == 0, result.stderr
    assert (out / "grid.toml").read_text() == text
    assert [r["status"] for r in load_rows(out)] == ["done"]
