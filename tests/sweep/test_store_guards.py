"""A sweep database edited by hand, or kept on a read-only file system: ``results`` and
``report`` read what they can and refuse what they cannot, in one line (exit 2)."""

from __future__ import annotations

import os
import sqlite3
import subprocess

import pytest

from listcopy import cli
from listcopy.sweep.grid import load_grid
from listcopy.sweep.store import DB_FILE, Store

GRID = 'seeds = "0-2"\n[[specs]]\nname = "a"\n[[specs]]\nname = "b"\n"model.d_model" = 16\n'


@pytest.fixture
def sweep_dir(tmp_path, grid_file):
    runs = load_grid(grid_file(GRID)).runs()
    out = tmp_path / "sweep"
    out.mkdir()
    with Store(out / DB_FILE) as store:
        store.add(runs, lambda r: f"runs/{r.key}")
        store.start(r.key for r in runs)
        for i, r in enumerate(runs):
            store.finish(r.key, {"status": "done", "stop_reason": "max_steps", "steps": 100,
                                 "loss": 0.1, "acc": 0.1 * i, "seq_acc": 0.05 * i,
                                 "steps_to_threshold": None if i % 2 else 50, "wall_time_s": 1.0,
                                 "error": None})
    return out


def corrupt(sweep_dir, sql, *params):
    conn = sqlite3.connect(sweep_dir / DB_FILE)
    conn.execute("PRAGMA ignore_check_constraints = ON")
    with conn:
        conn.execute(sql, params)
    conn.close()


CORRUPTIONS = [
    ("UPDATE runs SET acc = 'high'", (), "acc = 'high': not a number"),
    ("UPDATE runs SET acc = 7.5", (), "acc = 7.5: not a number"),
    ("UPDATE runs SET steps_to_threshold = 'x'", (), "steps_to_threshold = 'x': not an integer"),
    ("UPDATE runs SET seed = 'x'", (), "seed = 'x': not an integer"),
    ("UPDATE runs SET status = 'lost'", (), "status = 'lost': not a status"),
    ("UPDATE runs SET config = '{'", (), "corrupt config or settings"),
    ("UPDATE runs SET config = '[]'", (), "corrupt config or settings"),
    ("UPDATE runs SET config = '{\"model\": {\"d_model\": 0}}'", (), "model.d_model = 0"),
    ("UPDATE runs SET config = ?", ("[" * 100_000 + "]" * 100_000,), "corrupt config or settings"),
    ("UPDATE entries SET settings = 'nope'", (), "corrupt config or settings"),
    ("UPDATE entries SET settings = '[1]'", (), "settings must be a JSON object"),
    ("UPDATE entries SET name = X'FF'", (), "name = b'\\xff': not a string"),
    ("UPDATE meta SET value = 'abc' WHERE key = 'schema_version'", (), "schema 'abc'"),
]


@pytest.mark.parametrize("sql, params, needle", CORRUPTIONS)
@pytest.mark.parametrize("command", ["results", "report"])
def test_hand_corrupted_values_are_one_line(sweep_dir, capsys, sql, params, needle, command):
    corrupt(sweep_dir, sql, *params)
    argv = [command, str(sweep_dir)] + (["--out", str(sweep_dir / "r.html"), "--quiet"]
                                        if command == "report" else [])
    code = cli.main(argv)
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2, err
    assert len(err) == 1 and "Traceback" not in err[0] and needle in err[0], err
    assert not (sweep_dir / "r.html").exists()


@pytest.mark.skipif(os.geteuid() != 0, reason="a read-only bind mount needs root")
def test_a_finished_sweep_on_a_read_only_file_system_is_read(grid_file, tmp_path, capsys):
    """A real (tiny) sweep, finished, then mounted read-only: SQLite cannot make the WAL's
    shared-memory file there ("unable to open database file" before)."""
    path = grid_file('seeds = "0-1"\n', base="[task]\nn_digits = 10\n[train]\nmax_steps = 50\n"
                     "eval_every = 25\nbatch_size = 16\ndevice = \"cpu\"\n")
    sweep = tmp_path / "sweep"
    assert cli.main(["sweep", str(path), "--out", str(sweep), "--workers", "0", "--quiet"]) == 0
    capsys.readouterr()
    assert sorted(p.name for p in sweep.glob("sweep.db*")) == ["sweep.db"]  # no -wal, no -shm
    ro = tmp_path / "ro"
    ro.mkdir()
    subprocess.run(["mount", "--bind", str(sweep), str(ro)], check=True)
    try:
        subprocess.run(["mount", "-o", "remount,ro,bind", str(ro)], check=True)
        code = cli.main(["results", str(ro), "--format", "json"])
        assert code == 0, capsys.readouterr().err
        read_only = capsys.readouterr().out
        out = tmp_path / "report.html"
        assert cli.main(["report", str(ro), "--out", str(out), "--quiet"]) == 0
        assert out.stat().st_size > 0 and capsys.readouterr().out.startswith("wrote ")
    finally:
        subprocess.run(["umount", "-l", str(ro)], check=False)
    assert cli.main(["results", str(sweep), "--format", "json"]) == 0
    assert read_only == capsys.readouterr().out  # the same as read where it was written
