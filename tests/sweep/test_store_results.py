"""The database (keys, idempotent inserts, recovery) and the results tables, checked by hand."""

from __future__ import annotations

import csv
import io
import json
import math
import sqlite3

import pytest

from listcopy import cli
from listcopy.config import ConfigError
from listcopy.sweep.grid import load_grid
from listcopy.sweep.results import format_results, load_rows, runs_table, summary_table
from listcopy.locks import FolderLock, in_use
from listcopy.sweep.store import DB_FILE, LOCK_FILE, Store, StoreError, failure

GRID = """
seeds = "0-4"
[[specs]]
name = "a"
[[specs]]
name = "a2"                 # the same configuration as a: reported twice, counted once
[[specs]]
name = "b"
"model.d_model" = 16
"""


def result(status, acc=None, stt=None, steps=100, stop=None, error=None):
    return {"status": status, "stop_reason": stop, "steps": steps, "loss": 0.1, "acc": acc,
            "seq_acc": acc, "steps_to_threshold": stt, "wall_time_s": 1.0, "error": error}


@pytest.fixture
def sweep_dir(tmp_path, grid_file):
    """A database filled by hand: a's five seeds as below, b's seeds 0-1 done, 2-4 pending."""
    runs = load_grid(grid_file(GRID)).runs()
    with Store(tmp_path / DB_FILE) as store:
        store.add(runs, lambda r: f"runs/{r.key}")
        by = {(r.names[0], r.seed): r.key for r in runs}
        store.start(by.values())
        store.finish(by["a", 0], result("done", 0.9, 300, stop="early_stop"))
        store.finish(by["a", 1], result("done", 0.8, None, stop="max_steps"))
        store.finish(by["a", 2], result("done", 1.0, 100, stop="early_stop"))
        store.finish(by["a", 3], failure("non-finite loss at step 50 (lr 10000)"))
        store.finish(by["b", 0], result("done", 0.5, None))
        store.finish(by["b", 1], result("done", 0.7, 400))
        store.recover()  # a4 and b2-b4 back to pending, as after a kill
    return tmp_path


def test_store_keys_runs_by_config_and_entries_by_name(sweep_dir, grid_file):
    runs = load_grid(grid_file(GRID)).runs()
    with Store(sweep_dir / DB_FILE) as store:
        assert store.add(runs, lambda r: "x") == 0  # nothing new: no duplicates
        assert store.counts() == {"pending": 4, "running": 0, "done": 5, "failed": 1}
        assert len(store.rows()) == 15  # 3 specs x 5 seeds
    conn = sqlite3.connect(sweep_dir / DB_FILE)
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert conn.execute("SELECT COUNT(*) FROM runs").fetchone()[0] == 10


def test_runs_left_running_by_a_stopped_sweep_read_as_pending(tmp_path, grid_file):
    runs = load_grid(grid_file('seeds = "0-1"\n')).runs()
    with Store(tmp_path / DB_FILE) as store:
        store.add(runs, lambda r: "d")
        store.start([runs[0].key])  # as a sweep killed while it trains seed 0
    assert not in_use(tmp_path / LOCK_FILE)
    assert [r["status"] for r in load_rows(tmp_path)] == ["pending", "pending"]
    with FolderLock(tmp_path / LOCK_FILE, lambda pid: AssertionError(pid)):  # a live sweep
        assert in_use(tmp_path / LOCK_FILE)
        assert [r["status"] for r in load_rows(tmp_path / DB_FILE)] == ["running", "pending"]
    assert not in_use(tmp_path / LOCK_FILE)  # released: the lock file left behind is free
    assert [r["status"] for r in load_rows(tmp_path)] == ["pending", "pending"]


def test_finish_records_once(tmp_path, grid_file):
    runs = load_grid(grid_file("seeds = [0]\n")).runs()
    with Store(tmp_path / DB_FILE) as store:
        store.add(runs, lambda r: "d")
        key = runs[0].key
        assert not store.finish(key, result("done", 0.5))  # not started: not recorded
        store.start([key])
        assert store.finish(key, result("done", 0.5))
        assert not store.finish(key, result("done", 0.9))  # a second report changes nothing
        assert store.rows()[0]["acc"] == 0.5 and store.rows()[0]["attempts"] == 1


def test_readonly_store_errors(tmp_path):
    with pytest.raises(StoreError, match="no sweep database"):
        Store(tmp_path / DB_FILE, readonly=True)
    (tmp_path / DB_FILE).write_text("not a database at all" * 100)
    with pytest.raises(StoreError, match="not a readable sweep database"):
        Store(tmp_path / DB_FILE, readonly=True)


def test_aggregation_by_hand(sweep_dir):
    rows = load_rows(sweep_dir)
    table = summary_table(rows)
    by_name = {r["name"]: r for r in table.rows}
    a = by_name["a"]
    # a: done 0.9 (reached at 300), 0.8 (not reached), 1.0 (reached at 100); one failed; one pending
    assert (a["n"], a["done"], a["failed"], a["pending"]) == (5, 3, 1, 1)
    assert a["acc_mean"] == pytest.approx(0.9)
    assert a["acc_std"] == pytest.approx(math.sqrt((0.0**2 + 0.1**2 + 0.1**2) / 2))  # n - 1
    assert a["frac_threshold"] == pytest.approx(2 / 4)  # of the finished runs
    assert a["median_steps_to_threshold"] == 200
    assert {k: v for k, v in by_name["a2"].items() if k != "name"} == {
        k: v for k, v in a.items() if k != "name"}
    b = by_name["b"]
    assert (b["n"], b["done"], b["failed"], b["pending"]) == (5, 2, 0, 3)
    assert b["acc_mean"] == pytest.approx(0.6)
    assert b["acc_std"] == pytest.approx(math.sqrt(0.02))
    assert b["frac_threshold"] == pytest.approx(0.5) and b["median_steps_to_threshold"] == 400
    assert "d_model" in table.columns and "seed" not in table.columns


def test_group_by_counts_a_run_once(sweep_dir):
    rows = load_rows(sweep_dir)
    table = summary_table(rows, ["d_model"])
    assert table.columns[0] == "d_model"
    d8 = next(r for r in table.rows if r["d_model"] == 8)  # entries of a and a2: the same 5 runs
    assert (d8["n"], d8["done"], d8["acc_mean"]) == (5, 3, pytest.approx(0.9))
    assert summary_table(rows, ["model.d_model"]).rows == table.rows
    assert len(summary_table(rows, ["name"]).rows) == 3
    with pytest.raises(ConfigError, match="not a setting"):
        summary_table(rows, ["colour"])


def test_runs_table_is_the_notebooks(sweep_dir):
    table = runs_table(load_rows(sweep_dir))
    assert table.columns[:9] == ["name", "n_layers", "n_heads", "d_model", "ln", "use_bias",
                                 "freeze_wv", "freeze_wo", "weight_decay"]
    assert table.columns[9:] == ["seed", "val_acc", "val_seq_acc", "steps", "steps_to_threshold",
                                 "status"]
    assert [r["name"] for r in table.rows[:6]] == ["a"] * 5 + ["a2"]
    assert table.rows[0]["val_acc"] == 0.9 and table.rows[0]["steps_to_threshold"] == 300
    assert len(table.notes) == 2 and "non-finite" in table.notes[0]  # a3 under a and a2


def test_formats(sweep_dir, capsys):
    rows = load_rows(sweep_dir)
    md = format_results(rows, "markdown")
    assert "| name " in md and "acc_mean" in md and "0.90000" in md
    parsed = list(csv.DictReader(io.StringIO(format_results(rows, "csv"))))
    assert len(parsed) == 15 and parsed[0]["val_acc"] == "0.9"
    parsed = list(csv.DictReader(io.StringIO(format_results(rows, "csv", ["d_model"]))))
    assert [r["d_model"] for r in parsed] == ["8", "16"]
    data = json.loads(format_results(rows, "json"))
    assert len(data["runs"]) == 15 and len(data["summary"]) == 3
    assert data["runs"][0]["config"]["model"]["d_model"] == 8

    assert cli.main(["results", str(sweep_dir), "--format", "json"]) == 0
    assert json.loads(capsys.readouterr().out)["summary"][0]["n"] == 5
    assert cli.main(["results", str(sweep_dir), "--group-by", "colour"]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "colour" in err
    for empty in ("", " , "):  # not taken for "no --group-by"
        assert cli.main(["results", str(sweep_dir), "--group-by", empty]) == 2
        err = capsys.readouterr().err
        assert len(err.strip().splitlines()) == 1 and "--group-by" in err and "no keys" in err
    assert cli.main(["results", str(sweep_dir / "nope")]) == 2
    assert "no sweep database" in capsys.readouterr().err
