"""The paper's Table 4 grid (examples/paper_grid.toml): its 19 settings as the paper lists them,
and a small version of the file (10 digits, 10 steps, one seed) swept end to end."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from listcopy.sweep.grid import load_grid, unique_runs
from listcopy.sweep.results import load_rows
from listcopy.sweep.runner import run_sweep

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"

# Table 4 of the paper, by hand: (d_model, LN, bias, W_V learned, W_O learned), in its order
# (its d_model 64 all-False row appears twice there, as the first part's last and the second's).
TABLE4 = [(64, ln, bias, wv, wo) for wv, wo in ((1, 1), (1, 0), (0, 1), (0, 0))
          for ln, bias in ((0, 0), (0, 1), (1, 0), (1, 1))] + [(128, 0, 0, 0, 0), (32, 0, 0, 0, 0),
                                                                (8, 0, 0, 0, 0)]


def settings(config):
    m = config.model
    return (m.d_model, int(m.ln), int(m.use_bias), int(not m.freeze_wv), int(not m.freeze_wo))


def test_the_grid_is_table_4_in_the_lines_variant():
    grid = load_grid(EXAMPLES / "paper_grid.toml")
    points = grid.points()
    assert len(grid.seeds) >= 3 and len(points) == 19 * len(grid.seeds)
    runs = unique_runs(points)
    assert [settings(r.config) for r in runs[:: len(grid.seeds)]] == TABLE4
    for p in points:
        t, m, tr = p.config.task, p.config.model, p.config.train
        assert t.mask_token and m.layer0_mask and (m.n_layers, m.n_heads) == (2, 1)
        assert (t.n_digits, t.list_len, tr.lr, tr.weight_decay, tr.batch_size) == (
            100, 2, 1e-3, 0.01, 128)


@pytest.mark.slow
def test_a_small_version_sweeps_end_to_end(tmp_path, capsys, monkeypatch):
    data = tomllib.loads((EXAMPLES / "paper_grid.toml").read_text())
    small = dict(data, seeds="0")
    small["task"] = {**data["task"], "n_digits": 10}
    small["train"] = {**data["train"], "max_steps": 10, "eval_every": 10, "device": "cpu"}
    grid_path = tmp_path / "paper_small.toml"
    grid_path.write_text(_toml(small))
    summary = run_sweep(grid_path, tmp_path / "sweep", workers=0, progress=False)
    assert (summary.n_entries, summary.n_runs, summary.trained) == (19, 19, 19)
    rows = load_rows(tmp_path / "sweep")
    assert {r["status"] for r in rows} == {"done"} and len(rows) == 19
    names = [s["name"] for s in data["specs"]]
    assert sorted({r["name"] for r in rows}) == sorted(names)
    for r in rows:
        c = r["config"]
        assert c.task.mask_token and c.model.layer0_mask and c.task.n_digits == 10
        assert r["steps"] == 10 and 0.0 <= r["acc"] <= 1.0
    _table_only_prints_each_cell(tmp_path, rows, capsys, monkeypatch)
    _errors_prints_each_run(tmp_path, rows, capsys)


def _table_only_prints_each_cell(tmp_path, rows, capsys, monkeypatch):
    """``listcopy paper --grid DIR --table-only``: one table row per setting, its one seed's
    accuracy as the cell's mean, worst and best; nothing trained, nothing written."""
    from listcopy import cli

    work = tmp_path / "cwd"
    work.mkdir()
    monkeypatch.chdir(work)
    capsys.readouterr()
    assert cli.main(["paper", "--grid", str(tmp_path / "sweep"), "--table-only"]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert out[-1].startswith(f"19 finished 2-layer runs of 19 in {tmp_path / 'sweep'}")
    head = [c.strip() for c in out[0].strip("|").split("|")]
    cells = {}
    for line in out[2:21]:
        cell = dict(zip(head, (c.strip() for c in line.strip("|").split("|"))))
        key = (int(cell["d_model"]),) + tuple(int(cell[k] == "True") for k in head[1:5])
        cells[key] = cell
    assert sorted(cells) == sorted(TABLE4) and list(work.iterdir()) == []
    for r in rows:
        cell = cells[settings(r["config"])]
        acc = f"{r['acc']:.4f}"
        assert (cell["listcopy"], cell["min"], cell["max"], cell["runs"]) == (acc, acc, acc, "1")
        assert cell["above 0.9"] == ("1.00" if r["acc"] > 0.9 else "0.00")


def _errors_prints_each_run(tmp_path, rows, capsys):
    """``--table-only --errors``: after Table 4, one row per run (its accuracy the sweep's, each
    position's three fractions summing to 1) and how many runs end each way."""
    from listcopy import cli
    from listcopy.analysis.errors import ENDINGS

    assert cli.main(["paper", "--grid", str(tmp_path / "sweep"), "--table-only", "--errors"]) == 0
    out = capsys.readouterr().out.strip().split("\n\n")
    table, counts = out[-2].splitlines(), out[-1]
    head = [c.strip() for c in table[0].strip("|").split("|")]
    runs = {}
    for line in table[2:]:
        row = dict(zip(head, (c.strip() for c in line.strip("|").split("|"))))
        runs[row["run"]] = row
    by_name = {Path(r["run_dir"]).name.rsplit("-", 1)[0]: r for r in rows}
    assert sorted(runs) == sorted(by_name) and len(runs) == 19
    for name, row in runs.items():
        assert float(row["acc"]) == pytest.approx(by_name[name]["acc"], abs=1e-3)
        for o in ("o1", "o2"):
            parts = [float(row[f"{o} {k}"]) for k in ("right", "other digit of the list",
                                                      "not in the list")]
            assert sum(parts) == pytest.approx(1.0, abs=2e-4)
        assert row["ends"] in ENDINGS and (row["ends"] == "solved") == (float(row["acc"]) > 0.9)
    told = {k: int(n) for n, k in (p.split(" ", 1) for p in counts.split(": ", 1)[1].split(", "))}
    assert told == {k: sum(r["ends"] == k for r in runs.values()) for k in told}
    assert sum(told.values()) == 19


def _toml(data: dict) -> str:
    """The few TOML shapes a grid file uses: top-level scalars, tables, an array of tables."""
    def value(v):
        if isinstance(v, bool):
            return str(v).lower()
        return f'"{v}"' if isinstance(v, str) else repr(v)

    lines = [f"{k} = {value(v)}" for k, v in data.items() if not isinstance(v, (dict, list))]
    for name in ("task", "model", "train"):
        lines += [f"[{name}]"] + [f"{k} = {value(v)}" for k, v in data[name].items()]
    for spec in data["specs"]:
        lines += ["[[specs]]"] + [f'"{k}" = {value(v)}' for k, v in spec.items()]
    return "\n".join(lines) + "\n"


def test_the_errors_table_takes_every_runs_columns(monkeypatch):
    """Runs with lists of 2 and of 3 in one sweep: every position's columns, "-" where a run has
    none, ``ends`` last, and the counts."""
    from listcopy.paper import page

    def row(run, L, ends):
        out = {"run": run, "acc": 0.5, "seq_acc": 0.25}
        for j in range(1, L + 1):
            out.update({f"o{j} right": 0.5, f"o{j} other digit of the list": 0.5,
                        f"o{j} not in the list": 0.0})
        return {**out, "right digits, any order": 0.5, "ends": ends}

    monkeypatch.setattr(page, "errors_rows",
                        lambda grid: [row("two", 2, "order lost"), row("three", 3, "solved")])
    table, counts = page.errors_markdown("g").split("\n\n")
    lines = table.splitlines()
    head = [c.strip() for c in lines[0].strip("|").split("|")]
    assert head[-1] == "ends" and "o3 right" in head and len(head) == 3 + 9 + 2
    two = [c.strip() for c in lines[2].strip("|").split("|")]
    assert two[head.index("o3 right")] == "-" and two[-1] == "order lost"
    assert counts == "2 finished runs: 1 solved, 1 order lost"
