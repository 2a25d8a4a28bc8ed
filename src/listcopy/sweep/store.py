"""The sweep's database: SQLite in WAL mode, ``sweep.db`` in the sweep directory.

Two tables::

    runs     one row per distinct configuration (key = config_hash): the config as JSON, seed,
             status (pending | running | done | failed), stop reason, steps, loss, acc, seq_acc,
             steps to threshold, wall time, the run directory (relative to the sweep directory),
             the error of a failed run, how many times it was started, and the other metrics
             of another kind of run as JSON (an SAE's L0, MSE, baseline accuracy, ...)
    entries  one row per (name, run): the grid entries that report a run, with the settings that
             made them and their position in the table

A directory holds runs of one kind (``kinds.py``: model runs, or SAEs), named in ``meta``.

Only the sweep's driver process writes, one short transaction per change, so a kill at any moment
leaves the database as it was before or after that change: a finished run is never lost and, since
both tables are keyed, a re-run never duplicates one. Readers (``listcopy results``) may read while
a sweep writes (WAL).
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
from pathlib import Path
from typing import Any, Iterable, Sequence

from ..errors import BadInput, one_line
from .grid import PlannedRun
from .kinds import MODEL, kind_of, kind_of_dict

DB_FILE = "sweep.db"
LOCK_FILE = "sweep.lock"  # held by the sweep writing the database (locks.py)
SCHEMA_VERSION = 1
STATUSES = ("pending", "running", "done", "failed")
RESULT_FIELDS = ("status", "stop_reason", "steps", "loss", "acc", "seq_acc", "steps_to_threshold",
                 "wall_time_s", "error", "metrics")

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS runs (
    key                TEXT PRIMARY KEY,
    config             TEXT NOT NULL,
    seed               INTEGER NOT NULL,
    status             TEXT NOT NULL DEFAULT 'pending'
                       CHECK (status IN ('pending', 'running', 'done', 'failed')),
    stop_reason        TEXT,
    steps              INTEGER,
    loss               REAL,
    acc                REAL,
    seq_acc            REAL,
    steps_to_threshold INTEGER,
    wall_time_s        REAL,
    run_dir            TEXT NOT NULL,
    error              TEXT,
    attempts           INTEGER NOT NULL DEFAULT 0,
    updated_at         REAL NOT NULL,
    metrics            TEXT
);
CREATE TABLE IF NOT EXISTS entries (
    name     TEXT NOT NULL,
    key      TEXT NOT NULL REFERENCES runs(key),
    settings TEXT NOT NULL,
    position INTEGER NOT NULL,
    PRIMARY KEY (name, key)
);
"""


class StoreError(BadInput):
    """A sweep database that cannot be read (exit 2). The message is one line."""


class Store:
    """One connection to a sweep's database."""

    def __init__(self, path: str | Path, readonly: bool = False):
        self.path = Path(path)
        try:
            if readonly:
                self.conn = _open_readonly(self.path)
            else:
                self.conn = sqlite3.connect(self.path, timeout=30)
                self.conn.execute("PRAGMA journal_mode=WAL")
                self.conn.execute("PRAGMA synchronous=FULL")
                with self.conn:
                    self.conn.executescript(SCHEMA)
                    self.conn.execute("INSERT OR IGNORE INTO meta VALUES ('schema_version', ?)",
                                      (str(SCHEMA_VERSION),))
                    columns = {r[1] for r in self.conn.execute("PRAGMA table_info(runs)")}
                    if "metrics" not in columns:  # a database of an earlier listcopy
                        self.conn.execute("ALTER TABLE runs ADD COLUMN metrics TEXT")
            self.conn.row_factory = sqlite3.Row
            version = self.conn.execute(
                "SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
        except sqlite3.DatabaseError as err:
            raise StoreError(f"{self.path}: not a readable sweep database ({err})") from None
        if version is None or str(version[0]) != str(SCHEMA_VERSION):
            raise StoreError(f"{self.path}: sweep database schema "
                             f"{one_line(repr(version and version[0]), 40)}, "
                             f"this listcopy reads {SCHEMA_VERSION}")

    def close(self) -> None:
        self.conn.close()

    def __enter__(self) -> "Store":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ---- writing (the driver only) ------------------------------------------------------------
    def add(self, runs: Sequence[PlannedRun], run_dir_of) -> int:
        """Insert runs not yet known (as pending) and their entries; returns how many runs are new.

        ``run_dir_of(run)`` gives a new run's directory, relative to the sweep directory.
        """
        now = time.time()
        with self.conn:
            self._check_kind(runs)
            before = self.conn.execute("SELECT COUNT(*) FROM runs").fetchone()[0]
            position = self.conn.execute(
                "SELECT COALESCE(MAX(position) + 1, 0) FROM entries").fetchone()[0]
            for run in runs:
                self.conn.execute(
                    "INSERT OR IGNORE INTO runs (key, config, seed, run_dir, updated_at)"
                    " VALUES (?, ?, ?, ?, ?)",
                    (run.key, json.dumps(run.config.to_dict(), sort_keys=True), run.seed,
                     str(run_dir_of(run)), now))
            for point in sorted((p for run in runs for p in run.points), key=lambda p: p.index):
                cur = self.conn.execute(
                    "INSERT OR IGNORE INTO entries (name, key, settings, position)"
                    " VALUES (?, ?, ?, ?)",
                    (point.name, point.key, json.dumps(dict(point.settings)), position))
                position += cur.rowcount
            after = self.conn.execute("SELECT COUNT(*) FROM runs").fetchone()[0]
        return after - before

    def _check_kind(self, runs: Sequence[PlannedRun]) -> None:
        """Runs of one kind per directory (the results tables are per kind); the first add names it."""
        kinds = sorted({kind_of(run.config).name for run in runs})
        if not kinds:
            return
        row = self.conn.execute("SELECT value FROM meta WHERE key = 'kind'").fetchone()
        has_runs = self.conn.execute("SELECT COUNT(*) FROM runs").fetchone()[0] > 0
        held = row[0] if row else MODEL.name if has_runs else kinds[0]  # earlier databases: models
        other = [k for k in kinds if k != held]
        if other:
            raise StoreError(f"{self.path.parent}: holds {held} runs; {other[0]} runs need a sweep "
                             "directory of their own (--out)")
        if row is None:
            self.conn.execute("INSERT INTO meta VALUES ('kind', ?)", (held,))

    def recover(self) -> int:
        """Runs left ``running`` by a sweep that was killed go back to ``pending``; how many."""
        with self.conn:
            cur = self.conn.execute("UPDATE runs SET status = 'pending', updated_at = ?"
                                    " WHERE status = 'running'", (time.time(),))
        return cur.rowcount

    def start(self, keys: Iterable[str]) -> None:
        keys = list(keys)
        with self.conn:
            self.conn.executemany(
                "UPDATE runs SET status = 'running', attempts = attempts + 1, updated_at = ?,"
                " error = NULL WHERE key = ? AND status IN ('pending', 'failed')",
                [(time.time(), k) for k in keys])

    def finish(self, key: str, result: dict[str, Any]) -> bool:
        """Record a finished run (status done or failed); False if it was already recorded."""
        if result.get("status") not in ("done", "failed"):
            raise ValueError(f"a finished run is done or failed, not {result.get('status')!r}")
        values = [result.get(f) for f in RESULT_FIELDS]
        if values[-1] is not None:
            values[-1] = json.dumps(values[-1], sort_keys=True)
        with self.conn:
            cur = self.conn.execute(
                "UPDATE runs SET " + ", ".join(f"{f} = ?" for f in RESULT_FIELDS)
                + ", updated_at = ? WHERE key = ? AND status = 'running'",
                (*values, time.time(), key))
        return cur.rowcount == 1

    # ---- reading ---------------------------------------------------------------------------------
    def _select(self, sql: str) -> list[sqlite3.Row]:
        try:
            return self.conn.execute(sql).fetchall()
        except sqlite3.DatabaseError as err:
            raise StoreError(f"{self.path}: not a readable sweep database ({err})") from None

    def statuses(self, keys: Iterable[str] | None = None) -> dict[str, str]:
        rows = self._select("SELECT key, status FROM runs")
        if keys is None:
            return {r["key"]: r["status"] for r in rows}
        wanted = set(keys)
        return {r["key"]: r["status"] for r in rows if r["key"] in wanted}

    def run_dirs(self, keys: Iterable[str]) -> dict[str, str]:
        wanted = set(keys)
        return {r["key"]: r["run_dir"] for r in self._select("SELECT key, run_dir FROM runs")
                if r["key"] in wanted}

    def rows(self) -> list[dict[str, Any]]:
        """Every entry with its run's results, in table order; ``config`` parsed to a Config.
        A value of the wrong type (a hand-edited database) is one ``StoreError`` line."""
        try:
            cur = self.conn.execute(
                "SELECT e.name, e.settings, e.position, r.* FROM entries e JOIN runs r USING (key)"
                " ORDER BY e.position")
            return [checked_row(dict(row), self.path) for row in cur]
        except sqlite3.DatabaseError as err:
            raise StoreError(f"{self.path}: not a readable sweep database ({err})") from None

    def counts(self) -> dict[str, int]:
        counts = dict.fromkeys(STATUSES, 0)
        for status, n in self._select("SELECT status, COUNT(*) FROM runs GROUP BY status"):
            counts[status] = n
        return counts


def _open_readonly(path: Path) -> sqlite3.Connection:
    """A read-only connection; in a folder we cannot write (a finished sweep on a read-only
    mount), SQLite cannot make the WAL's shared-memory file, so the file is opened immutable
    (nobody can be writing to it through this folder)."""
    if not path.is_file():
        raise StoreError(f"{path}: no sweep database here")
    uri = path.resolve().as_uri()
    if os.access(path.parent, os.W_OK):
        return sqlite3.connect(f"{uri}?mode=ro", uri=True, timeout=30)
    wal = path.with_name(path.name + "-wal")
    if wal.is_file() and wal.stat().st_size:
        raise StoreError(f"{path}: in a read-only folder with an unfinished write-ahead log "
                         f"({wal.name}); copy the sweep folder somewhere writable to read it")
    return sqlite3.connect(f"{uri}?mode=ro&immutable=1", uri=True, timeout=30)


# column -> (what it must hold, test); None is allowed where the column may be NULL
_INT = (int,)
_NUM = (int, float)
_COLUMNS: dict[str, tuple[str, tuple[type, ...], bool]] = {
    "name": ("a string", (str,), False), "key": ("a string", (str,), False),
    "position": ("an integer", _INT, False), "seed": ("an integer", _INT, False),
    "status": ("a status", (str,), False), "stop_reason": ("a string", (str,), True),
    "steps": ("an integer", _INT, True), "loss": ("a number", _NUM, True),
    "acc": ("a number", _NUM, True), "seq_acc": ("a number", _NUM, True),
    "steps_to_threshold": ("an integer", _INT, True), "wall_time_s": ("a number", _NUM, True),
    "run_dir": ("a string", (str,), False), "error": ("a string", (str,), True),
}


def checked_row(d: dict[str, Any], path: Path) -> dict[str, Any]:
    """One row of ``Store.rows``, its values checked and ``config`` / ``settings`` parsed."""
    where = f"{path}: run {str(d.get('key'))[:8]} ({one_line(d.get('name'), 60)})"
    for column, (what, types, nullable) in _COLUMNS.items():
        value = d.get(column)
        ok = (value is None and nullable) or (isinstance(value, types)
                                              and not isinstance(value, bool))
        if ok and column == "status":
            ok = value in STATUSES
        if ok and column in ("acc", "seq_acc") and value is not None:
            ok = 0 <= value <= 1
        if not ok:
            raise StoreError(f"{where}: {column} = {one_line(repr(value), 60)}: not {what}")
    try:
        config = json.loads(d["config"])
        d["config"] = kind_of_dict(config).from_dict(config)
        d["metrics"] = json.loads(d["metrics"]) if d.get("metrics") else None
        d["settings"] = json.loads(d["settings"])
    except (TypeError, ValueError, RecursionError) as err:  # JSON, or a ConfigError
        raise StoreError(f"{where}: corrupt config or settings ({one_line(err, 200)})") from None
    if not isinstance(d["settings"], dict):
        raise StoreError(f"{where}: settings must be a JSON object")
    return d


def result_of(record: dict[str, Any]) -> dict[str, Any]:
    """A run record (``Run.record()``, run.json) -> the database's result fields."""
    metrics = record.get("metrics") or {}
    status = record.get("status")
    error = record.get("error")
    if status not in ("done", "failed"):
        status, error = "failed", error or f"training ended with status {status!r}"
    return {"status": status, "stop_reason": record.get("stop_reason"),
            "steps": record.get("step"), "loss": _finite(metrics.get("loss")),
            "acc": metrics.get("acc"), "seq_acc": metrics.get("seq_acc"),
            "steps_to_threshold": record.get("steps_to_threshold"),
            "wall_time_s": record.get("wall_time_s"), "error": error}


def failure(error: BaseException | str) -> dict[str, Any]:
    """The database's result fields of a run that failed with ``error`` (one line, 500 chars)."""
    text = error if isinstance(error, str) else f"{type(error).__name__}: {error}"
    text = one_line(text, 500) or "error"
    return {"status": "failed", "stop_reason": None, "steps": None, "loss": None, "acc": None,
            "seq_acc": None, "steps_to_threshold": None, "wall_time_s": None, "error": text}


def _finite(x: Any) -> Any:
    """NaN / inf losses are stored as NULL (SQLite and JSON have no NaN)."""
    if isinstance(x, float) and (x != x or x in (float("inf"), float("-inf"))):
        return None
    return x
