"""A sweep's results: the notebook's table, and the same aggregated over seeds.

The runs table has one row per grid entry, as the notebook prints it: ``name`` first, then every
setting (all of ``model``, ``train.weight_decay``, and whatever else varies in the sweep, the seed
included), then ``val_acc``; then ``val_seq_acc``, ``steps``, ``steps_to_threshold``, ``status``.

The summary groups entries (by default: same name and settings but the seed; or ``group_by``) and
counts each distinct run once per group. Over a group's finished runs (done or failed):

    acc_mean, acc_std          mean and sample standard deviation (n - 1) of the validation
                               accuracy of the runs that are done (a failed run has no accuracy)
    frac_threshold             runs that reached ``train.early_stop_acc`` / finished runs
    median_steps_to_threshold  median step at which those runs reached it

Another kind of run (``kinds.py``) brings its own :class:`Columns`: the settings always shown, its
result columns and its aggregate (``listcopy.sae.grid``: an SAE's baseline and patched accuracy, L0,
dead latents, MSE, explained variance).
"""

from __future__ import annotations

import csv
import io
import json
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from ..config import ConfigError, dotted_key, short_key
from ..locks import in_use
from .kinds import kind_of
from .store import DB_FILE, LOCK_FILE, Store

# the notebook's columns: its model settings and the weight decay
# (the settings added since, such as model.layer0_mask, are shown where they vary)
ALWAYS = tuple(f"model.{k}" for k in ("n_layers", "n_heads", "d_model", "ln", "use_bias",
                                      "freeze_wv", "freeze_wo")) + ("train.weight_decay",)
RESULT_COLUMNS = ("val_acc", "val_seq_acc", "steps", "steps_to_threshold", "status")
GROUP_BY_HINT = "use name or a key such as model.d_model (or d_model)"
SUMMARY_COLUMNS = ("n", "done", "failed", "pending", "acc_mean", "acc_std", "frac_threshold",
                   "median_steps_to_threshold")
FORMATS = {"val_acc": ".5f", "val_seq_acc": ".5f", "acc_mean": ".5f", "acc_std": ".5f",
           "frac_threshold": ".3f"}


@dataclass
class ResultsTable:
    """A table of ``listcopy results``: column names, one dict per row, a caption, notes below."""

    columns: list[str]
    rows: list[dict[str, Any]]
    caption: str = ""
    notes: tuple[str, ...] = ()


@dataclass(frozen=True)
class Columns:
    """What the tables show of one kind of run (the model kind's: ``MODEL_COLUMNS``)."""

    always: tuple[str, ...]  # setting columns shown even when they do not vary
    seed_key: str  # the setting the summary aggregates over
    results: tuple[str, ...]  # the runs table's columns after the settings
    values: Callable[[dict[str, Any]], dict[str, Any]]  # a database row -> its result columns
    summary: tuple[str, ...]  # the summary's columns after the group labels
    aggregate: Callable[[Sequence[dict[str, Any]]], dict[str, Any]]  # distinct runs -> summary
    caption: Callable[[Sequence[dict[str, Any]]], str]  # the runs table's caption
    keys: tuple[str, ...]  # every setting, for --group-by
    formats: Mapping[str, str] = field(default_factory=dict)  # column -> format spec


def columns_of(rows: Sequence[dict[str, Any]]) -> Columns:
    return kind_of(rows[0]["config"]).columns if rows else MODEL_COLUMNS


def load_rows(sweep_dir: str | Path) -> list[dict[str, Any]]:
    """Every entry of the sweep with its run's results (see Store.rows). Where no sweep holds the
    directory (killed, stopped), runs it left ``running`` are shown ``pending``: the next sweep
    trains them again."""
    path = Path(sweep_dir)
    db = path / DB_FILE if path.is_dir() else path
    with Store(db, readonly=True) as store:
        rows = store.rows()
    if not in_use(db.parent / LOCK_FILE):
        for r in rows:
            if r["status"] == "running":
                r["status"] = "pending"
    return rows


def setting_keys(rows: Sequence[dict[str, Any]], always: Sequence[str] = ALWAYS) -> list[str]:
    """Dotted keys shown as settings: ``always`` (the notebook's), and every other key that varies."""
    flat = [r["config"].flat() for r in rows]
    keys = list(flat[0]) if flat else list(always)
    return [k for k in keys
            if k in always or len({json.dumps(f[k]) for f in flat}) > 1]


def headers(keys: Sequence[str], results: Sequence[str] = RESULT_COLUMNS) -> dict[str, str]:
    """Dotted key -> column name: the short name (``d_model``) where it is unambiguous."""
    shorts = [short_key(k) for k in keys]
    return {k: s if shorts.count(s) == 1 and s not in ("name", *results) else k
            for k, s in zip(keys, shorts)}


def model_values(r: dict[str, Any]) -> dict[str, Any]:
    return {"val_acc": r["acc"], "val_seq_acc": r["seq_acc"], "steps": r["steps"],
            "steps_to_threshold": r["steps_to_threshold"], "status": r["status"]}


def model_caption(rows: Sequence[dict[str, Any]]) -> str:
    thresholds = sorted({r["config"].train.early_stop_acc for r in rows})
    return (f"{len(rows)} entries; steps_to_threshold: first evaluation at val_acc >= "
            + "/".join(f"{t:g}" for t in thresholds))


def runs_table(rows: Sequence[dict[str, Any]]) -> ResultsTable:
    columns = columns_of(rows)
    keys = setting_keys(rows, columns.always)
    names = headers(keys, columns.results)
    out = []
    for r in rows:
        flat = r["config"].flat()
        row = {"name": r["name"]}
        row.update({names[k]: flat[k] for k in keys})
        row.update(columns.values(r))
        out.append(row)
    notes = tuple(f"failed: {r['name']} (seed {r['seed']}, {r['key'][:8]}): {r['error']}"
                  for r in rows if r["status"] == "failed")
    caption = columns.caption(rows) if rows else "no entries"
    return ResultsTable(["name", *(names[k] for k in keys), *columns.results], out, caption, notes)


def summary_table(rows: Sequence[dict[str, Any]],
                  group_by: Sequence[str] | None = None) -> ResultsTable:
    """Aggregate over seeds (default) or by ``group_by`` keys (``name``, dotted or short keys)."""
    columns = columns_of(rows)
    keys = setting_keys(rows, columns.always)
    names = headers(keys, columns.results)
    if group_by:
        by = [k if k == "name" else dotted_key(k, "--group-by", GROUP_BY_HINT, columns.keys)
              for k in group_by]
    else:
        by = ["name"] + [k for k in keys if k != columns.seed_key]
    groups: dict[str, list[dict[str, Any]]] = {}
    labels: dict[str, dict[str, Any]] = {}
    for r in rows:
        flat = r["config"].flat()
        label = {("name" if k == "name" else names.get(k, k)):
                 (r["name"] if k == "name" else flat[k]) for k in by}
        gid = json.dumps(list(label.values()))
        labels.setdefault(gid, label)
        groups.setdefault(gid, [])
        if all(g["key"] != r["key"] for g in groups[gid]):  # a run counts once per group
            groups[gid].append(r)
    if group_by and "name" in by:
        _check_one_config_per_name(groups.values(), group_by)
    out = []
    for gid, members in groups.items():
        out.append({**labels[gid], **columns.aggregate(members)})
    label_cols = [("name" if k == "name" else names.get(k, k)) for k in by]
    cols = [c for c in columns.summary if c != "pending" or any(r["pending"] for r in out)]
    n_runs = len({r["key"] for r in rows})
    return ResultsTable(label_cols + cols, out,
                 f"{len(out)} group{'s' if len(out) != 1 else ''} of {n_runs} run"
                 f"{'s' if n_runs != 1 else ''}"
                 + (f", by {', '.join(label_cols)}" if group_by else ", over seeds"))


def _check_one_config_per_name(groups, group_by: Sequence[str]) -> None:
    """Grouping by name must not pool entries that share a name but not their settings (two
    [[specs]] of one name, as the notebook's grid has): a ``ConfigError`` naming what differs."""
    for members in groups:
        by_name: dict[str, dict[str, Any]] = {}
        for r in members:
            settings = {k: v for k, v in r["settings"].items() if k != "train.seed"}
            first = by_name.setdefault(r["name"], settings)
            if settings != first:
                differ = sorted(k for k in {*first, *settings} if first.get(k) != settings.get(k))
                raise ConfigError(
                    f"--group-by {','.join(group_by)}: {r['name']!r} names entries with different"
                    f" {', '.join(differ)}; add {'them' if len(differ) > 1 else 'it'} to --group-by"
                    f" (e.g. --group-by {','.join([*group_by, short_key(differ[0])])})")


def counts(runs: Sequence[dict[str, Any]]) -> dict[str, int]:
    """n, done, failed, pending (or running) of distinct runs: the summary's first columns."""
    return {"n": len(runs), "done": sum(r["status"] == "done" for r in runs),
            "failed": sum(r["status"] == "failed" for r in runs),
            "pending": sum(r["status"] in ("pending", "running") for r in runs)}


def mean_std(values: Sequence[float]) -> tuple[float | None, float | None]:
    """Mean and sample standard deviation (n - 1); None where there are too few values."""
    return (statistics.fmean(values) if values else None,
            statistics.stdev(values) if len(values) > 1 else None)


def aggregate(runs: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The summary numbers of distinct runs (rows with status, acc, steps_to_threshold)."""
    finished = [r for r in runs if r["status"] in ("done", "failed")]
    accs = [r["acc"] for r in finished if r["status"] == "done" and r["acc"] is not None]
    reached = [r["steps_to_threshold"] for r in finished if r["steps_to_threshold"] is not None]
    mean, std = mean_std(accs)
    return {
        **counts(runs),
        "acc_mean": mean,
        "acc_std": std,
        "frac_threshold": len(reached) / len(finished) if finished else None,
        "median_steps_to_threshold": statistics.median(reached) if reached else None,
    }


MODEL_COLUMNS = Columns(ALWAYS, "train.seed", RESULT_COLUMNS, model_values, SUMMARY_COLUMNS,
                        aggregate, model_caption, (), FORMATS)


# ---- formatting --------------------------------------------------------------------------------

def format_results(rows: Sequence[dict[str, Any]], fmt: str = "markdown",
                   group_by: Sequence[str] | None = None, table: str | None = None) -> str:
    """``markdown``: both tables; ``csv``: the runs table, or the summary with ``group_by`` or
    ``table="summary"``; ``json``: ``{"runs": [...], "summary": [...]}``."""
    runs = runs_table(rows)
    summary = summary_table(rows, group_by)
    if fmt == "json":
        data = {}
        if table in (None, "runs"):
            data["runs"] = [{**row, "key": r["key"], "seed": r["seed"], "run_dir": r["run_dir"],
                             "error": r["error"], "config": r["config"].to_dict()}
                            for row, r in zip(runs.rows, rows)]
        if table in (None, "summary"):
            data["summary"] = summary.rows
        return json.dumps(data, indent=1)
    if fmt == "csv":
        t = summary if table == "summary" or (table is None and group_by) else runs
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=t.columns, extrasaction="ignore",
                                lineterminator="\n")
        writer.writeheader()
        writer.writerows(t.rows)
        return buf.getvalue().rstrip("\n")
    if fmt != "markdown":
        raise ConfigError(f"--format {fmt!r}: use markdown, csv or json")
    parts = []
    for t in ([runs] if table == "runs" else [summary] if table == "summary" else [runs, summary]):
        parts.append(t.caption + "\n\n" + markdown(t.columns, t.rows, columns_of(rows).formats)
                     + ("\n\n" + "\n".join(t.notes) if t.notes else ""))
    return "\n\n".join(parts)


def markdown(columns: Sequence[str], rows: Sequence[dict[str, Any]],
             formats: Mapping[str, str] = FORMATS) -> str:
    """A pipe table as ``pandas.DataFrame.to_markdown(index=False)`` prints it (numbers right);
    floats as ``formats`` says for their column, else ``:g``."""
    cells = [[_cell(row.get(c), formats.get(c, "g")) for c in columns] for row in rows]
    numeric = [all(_is_number(row.get(c)) or row.get(c) is None for row in rows) and
               any(_is_number(row.get(c)) for row in rows) for c in columns]
    widths = [max([len(c)] + [len(r[i]) for r in cells]) for i, c in enumerate(columns)]

    def line(values):
        return "| " + " | ".join(v.rjust(w) if num else v.ljust(w)
                                 for v, w, num in zip(values, widths, numeric)) + " |"

    rule = "|" + "|".join((("-" * (w + 1)) + ":") if num else (":" + "-" * (w + 1))
                          for w, num in zip(widths, numeric)) + "|"
    return "\n".join([line(columns), rule] + [line(r) for r in cells])


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _cell(v: Any, spec: str) -> str:
    if v is None:
        return "-"
    if isinstance(v, bool):
        return str(v)
    return format(v, spec) if isinstance(v, float) else str(v)
