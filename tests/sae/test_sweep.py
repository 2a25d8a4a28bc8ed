"""SAE grids through the sweep machinery: the grid file, the database, resuming, the results tables.

The interruption is reached by construction: ``train_sae`` is wrapped so that its second call
raises ``KeyboardInterrupt`` (as Ctrl-C or a kill would stop the driver while that SAE trains),
after the first SAE was trained and recorded.
"""

import json
import sqlite3
import textwrap

from pathlib import Path

import pytest

import listcopy.sae.run as sae_run
from listcopy.cli import main
from listcopy.sae.grid import SAERunConfig, parse_sae_grid
from listcopy.sweep.grid import GridError, load_grid
from listcopy.sweep.results import format_results, load_rows
from listcopy.sweep.runner import run_sweep
from listcopy.sweep.store import DB_FILE, Store, StoreError

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
GRID = """
model = "{model}"
seeds = "0"
[sae]
d_sae = 12
steps = 60
batch_size = 64
lr = 3e-3
device = "cpu"
[axes]
"sae.k" = [1, 2]
"""


@pytest.fixture
def sae_grid(tmp_path, model_dir):
    def make(body: str = GRID, name: str = "sae.toml"):
        path = tmp_path / name
        path.write_text(textwrap.dedent(body).format(model=model_dir))
        return path
    return make


@pytest.fixture
def counted(monkeypatch):
    """Wrap ``train_sae``: ``calls`` lists the k of each SAE trained; ``stop_at`` interrupts."""
    real = sae_run.train_sae
    state = {"calls": [], "stop_at": None, "fail_k": None}

    def wrapped(model, config, out, **kwargs):
        state["calls"].append(config.k)
        if len(state["calls"]) == state["stop_at"]:
            raise KeyboardInterrupt
        if config.k == state["fail_k"]:
            raise RuntimeError("boom\nsecond line")
        return real(model, config, out, **kwargs)

    monkeypatch.setattr(sae_run, "train_sae", wrapped)
    return state


def _by_k(out):
    return {r["config"].sae.k: r for r in load_rows(out)}


def test_an_sae_grid_expands_its_axes_specs_and_seeds(sae_grid, model_dir):
    path = sae_grid(GRID.replace('seeds = "0"', 'seeds = "0-1"')
                    + '[[specs]]\nname = "topk"\n"sae.arch" = "topk"\n'
                    + '[[specs]]\nname = "btk"\n')
    grid = load_grid(path)
    points = grid.points()
    assert len(points) == 2 * 2 * 2 and len(grid.runs()) == 8
    assert all(isinstance(p.config, SAERunConfig) for p in points)
    assert points[0].name == "topk,k=1" and points[0].config.sae.arch == "topk"
    assert [(p.config.sae.k, p.seed) for p in points[:4]] == [(1, 0), (1, 1), (2, 0), (2, 1)]
    assert points[-1].config.sae.arch == "batchtopk" and points[-1].config.sae.d_sae == 12
    assert points[0].config.model == str(model_dir.resolve())
    assert points[0].config.to_dict()["kind"] == "sae"


@pytest.mark.parametrize("body, needle", [
    ('model = "no/such/dir"\n[sae]\nk = 2\n', "model = 'no/such/dir': no such run directory"),
    ('model = "{model}"\n[sae]\nk = 200\n', "sae.k = 200: must be at most sae.d_sae = 100"),
    ('model = "{model}"\n[axes]\n"model.d_model" = [8]\n', "unknown config section 'model'"),
    ('model = "{model}"\n[axes]\n"sae.seed" = [1, 2]\n', "give seeds with the top-level seeds"),
    ('model = "{model}"\n[axes]\n"sae.k" = [2, 200]\n', "axes sae.k=200"),
    ('model = "{model}"\n[train]\nlr = 1\n', "unknown key 'train' in an SAE grid"),
    ('[sae]\nk = 2\n', "needs model = \"PATH\""),
])
def test_a_bad_sae_grid_is_one_line(sae_grid, body, needle):
    with pytest.raises(GridError) as err:
        load_grid(sae_grid(body))
    message = str(err.value)
    assert needle in message and "\n" not in message, message


def test_sae_sweep_records_resumes_after_an_interruption_and_matches_one_run(
        tmp_path, sae_grid, counted):
    grid = sae_grid()
    out = tmp_path / "s"

    # 1. interrupted while the second SAE trains: the first is recorded, the second is not
    counted["stop_at"] = 2
    with pytest.raises(KeyboardInterrupt):
        run_sweep(grid, out, workers=0, progress=False)
    before = _by_k(out)
    # the interrupted sweep released its directory: the second reads as pending (results.py)
    assert before[1]["status"] == "done" and before[2]["status"] == "pending"
    assert (out / before[1]["run_dir"] / "sae.json").is_file()
    assert not (out / before[2]["run_dir"] / "sae.json").exists()

    # 2. the re-run trains only the unfinished SAE and keeps the first one's record as it was
    counted["calls"].clear()
    counted["stop_at"] = None
    summary = run_sweep(grid, out, workers=0, progress=False)
    assert counted["calls"] == [2]
    assert summary.counts == {"done": 2, "failed": 0, "pending": 0, "running": 0}
    after = _by_k(out)
    assert after[1]["updated_at"] == before[1]["updated_at"] and after[1]["acc"] == before[1]["acc"]

    # 3. the database holds what each run's sae.json says
    for r in after.values():
        record = json.loads((out / r["run_dir"] / "sae.json").read_text())
        m = record["metrics"]
        assert r["acc"] == m["patched_acc"] and r["seq_acc"] == m["patched_seq_acc"]
        assert r["metrics"]["baseline_acc"] == m["baseline_acc"] and r["metrics"]["l0"] == m["l0"]
        assert r["metrics"]["drop"] == pytest.approx(m["baseline_acc"] - m["patched_acc"])
        assert r["steps"] == 60 and record["sae_config"]["k"] == r["config"].sae.k

    # 4. the same numbers as a sweep never interrupted (training is seeded), run by the command
    #    in a worker process
    reference = tmp_path / "ref"
    assert main(["sweep", str(grid), "--out", str(reference), "--workers", "1", "--quiet"]) == 0
    ref = _by_k(reference)
    assert {k: (r["acc"], r["metrics"]) for k, r in after.items()} == \
        {k: (r["acc"], r["metrics"]) for k, r in ref.items()}

    # 5. an SAE written before a kill reached the database is taken from its directory
    with sqlite3.connect(out / DB_FILE) as conn:
        conn.execute("UPDATE runs SET status = 'running' WHERE key = ?", (after[2]["key"],))
    counted["calls"].clear()
    run_sweep(grid, out, workers=0, progress=False)
    assert counted["calls"] == []
    assert _by_k(out)[2]["status"] == "done" and _by_k(out)[2]["acc"] == after[2]["acc"]


def test_a_failed_sae_is_recorded_and_shown_and_the_sweep_goes_on(tmp_path, sae_grid, counted,
                                                                   capsys):
    counted["fail_k"] = 2
    out = tmp_path / "s"
    summary = run_sweep(sae_grid(), out, workers=0, progress=False)
    assert summary.counts["done"] == 1 and summary.counts["failed"] == 1
    rows = _by_k(out)
    assert rows[2]["error"] == "RuntimeError: boom second line" and rows[2]["acc"] is None

    # listcopy results: the SAE columns, the failure as a note, the summary over seeds
    assert main(["results", str(out)]) == 0
    text = capsys.readouterr().out
    header = next(line for line in text.splitlines() if line.startswith("| name"))
    for column in ("arch", "d_sae", "k", "lr", "baseline_acc", "patched_acc", "drop", "l0",
                   "dead", "explained_variance", "status"):
        assert f" {column} " in header, header
    assert f"{rows[1]['acc']:.5f}" in text
    assert "failed: k=2 (seed 0" in text and "boom second line" in text
    assert "patched_mean" in text and "drop_mean" in text

    # listcopy report of the directory says where its tables are, in one line
    assert main(["report", str(out), "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "a sweep of SAEs" in err and "listcopy results" in err

    # as CSV, grouped by a short SAE key
    csv_text = format_results(load_rows(out), "csv", group_by=["k"])
    lines = csv_text.splitlines()
    assert lines[0].startswith("k,n,done,failed,patched_mean")
    assert lines[1].startswith("1,1,1,0,") and lines[2].startswith("2,1,0,1,")


def test_model_and_sae_runs_do_not_share_a_directory(tmp_path, model_dir):
    grid = parse_sae_grid({"model": str(model_dir), "sae": {"steps": 10}})
    with Store(tmp_path / DB_FILE) as store:
        from listcopy import Config
        from listcopy.sweep.grid import Grid
        from listcopy.sweep.runner import run_dir_name

        store.add(Grid(Config(), (), (), (0,), "g").runs(), run_dir_name)
        with pytest.raises(StoreError, match="holds model runs; sae runs need a sweep directory"):
            store.add(grid.runs(), run_dir_name)


def test_the_example_sae_grid_and_its_plan(tmp_path, model_dir, capsys):
    text = (EXAMPLES / "sae_grid.toml").read_text()
    assert 'model = "runs/2layer_d64"' in text
    path = tmp_path / "sae_grid.toml"
    path.write_text(text.replace('"runs/2layer_d64"', json.dumps(str(model_dir))))
    points = load_grid(path).points()
    assert len(points) == 3 * 3 * 3
    assert points[0].name == "d_sae=50,k=2" and points[-1].name == "d_sae=200,k=8"
    assert {p.config.sae.steps for p in points} == {10000}

    assert main(["sweep", str(path), "--out", str(tmp_path / "s"), "--dry-run"]) == 0
    plan = capsys.readouterr().out
    assert "27 entries, 27 distinct runs" in plan and "SAE batchtopk d_sae 200 on run" in plan
    assert not (tmp_path / "s").exists()
