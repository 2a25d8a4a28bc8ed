"""kill -9 a real sweep at chosen moments, reached by construction (tests/pause.py: a process
waits there to be killed), several times; the re-run completes it with every result present
exactly once, equal to an uninterrupted sweep's, and the database is never corrupt."""

import signal
import sqlite3
import subprocess
import sys

import pytest

from listcopy.sweep import load_rows, run_sweep
from tests import pause

# (moment, n) per kill, counted per process: before the driver marks its first group running;
# inside a worker's third checkpoint file write (before its fsync: the driver, which writes
# grid.toml, may be the one to pause there instead); before the driver records its 2nd and its
# 4th result of that sweep (some runs done, the rest running)
KILLS = [("start", 1), ("fsync", 3), ("record", 2), ("record", 4)]
GRID = """
seeds = "0-2"
[task]
n_digits = 10
[train]
batch_size = 16
eval_every = 50
checkpoint_every = 50
early_stop_acc = 1.0
device = "cpu"
[axes]
"model.n_layers" = [1, 2]
"train.max_steps" = [300, 900]
"""


def _check_database(out):
    conn = sqlite3.connect(f"file:{out / 'sweep.db'}?mode=ro", uri=True, timeout=30)
    try:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        tables = {t for (t,) in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        if "runs" not in tables:  # killed while the first sweep was still creating it
            return {}
        keys = [k for (k,) in conn.execute("SELECT key FROM runs")]
        assert len(keys) == len(set(keys))
        return dict(conn.execute("SELECT key, acc FROM runs WHERE status = 'done'").fetchall())
    finally:
        conn.close()


@pytest.mark.slow
def test_sweep_survives_repeated_kill_9(tmp_path, tally):
    grid = tmp_path / "grid.toml"
    grid.write_text(GRID)
    out = tmp_path / "s"
    done_before: dict = {}
    for i, (moment, n) in enumerate(KILLS):
        where = tmp_path / f"pause{i}"
        proc = pause.start(where, moment, n, "sweep", grid, "--out", out, "--workers", "2",
                           "--quiet")
        assert pause.wait_paused(proc, where) is not None, proc.communicate()
        proc.send_signal(signal.SIGKILL)  # the driver; its workers die with it (PDEATHSIG)
        proc.communicate()
        done = _check_database(out)
        for key, acc in done_before.items():  # nothing finished is ever lost or changed
            assert done.get(key) == acc
        if moment == "record":
            assert len(done) == len(done_before) + n - 1, (done, done_before)
        done_before = done
        tally["sweep kills survived"] += 1
    final = subprocess.run([sys.executable, "-m", "listcopy.cli", "sweep", str(grid), "--out",
                            str(out), "--workers", "2", "--quiet"], capture_output=True, text=True,
                           timeout=1200)
    assert final.returncode == 0, final.stderr
    rows = load_rows(out)
    assert len(rows) == 12 and len({r["key"] for r in rows}) == 12
    assert all(r["status"] == "done" for r in rows)
    reference = tmp_path / "ref"
    run_sweep(grid, reference, workers=0, progress=False)
    ours = {r["key"]: (r["acc"], r["steps"]) for r in rows}
    theirs = {r["key"]: (r["acc"], r["steps"]) for r in load_rows(reference)}
    assert ours == theirs
