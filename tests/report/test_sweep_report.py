"""sweep_report: the tables, a heatmap of mean accuracy over two axes checked by hand, every seed,
steps to threshold; errors in one line."""

from __future__ import annotations

import statistics

import pytest

from listcopy.config import ConfigError
from listcopy.report import sweep_report
from listcopy.report.sweep_report import groups, mean_acc_grid, resolve_axes
from listcopy.sweep.results import load_rows

from .conftest import acc_of
from .test_model_report import figure_data


def test_heatmap_is_the_mean_over_seeds(sweep_dir):
    rows = load_rows(sweep_dir)
    xs, ys, z, n = mean_acc_grid(rows, ("model.d_model", "model.n_layers"))
    assert xs == [8, 16] and ys == [1, 2]
    for j, layers in enumerate(ys):
        for i, d in enumerate(xs):
            seeds = [0, 1] if (d, layers) == (16, 2) else [0, 1, 2]  # seed 2 of (16, 2) failed
            assert z[j][i] == pytest.approx(statistics.fmean(acc_of(d, layers, s) for s in seeds))
            assert n[j][i] == len(seeds)
    # swapped axes, short names
    xs2, ys2, z2, _ = mean_acc_grid(rows, resolve_axes(rows, ["n_layers", "d_model"]))
    assert xs2 == [1, 2] and ys2 == [8, 16] and z2[1][1] == pytest.approx(z[1][1])


def test_page(sweep_dir, tmp_path):
    out = tmp_path / "sweep.html"
    info = sweep_report(sweep_dir, out, progress=False)
    assert info.sections == ["results", "heatmap", "seeds", "steps"]
    figs = figure_data(out.read_text())
    assert set(figs) == {"acc_heatmap", "seed_strip", "steps_to_threshold"}
    strip = figs["seed_strip"]["data"]
    points = sorted(y for t in strip for y in t["y"])
    assert points == sorted(acc_of(d, l, s) for d in (8, 16) for l in (1, 2) for s in (0, 1, 2)
                            if (d, l, s) != (16, 2, 2))
    bars = [t for t in figs["steps_to_threshold"]["data"] if t["type"] == "bar"][0]
    assert bars["y"] == pytest.approx([0, 1, 1, 2 / 3])  # reached / finished, per entry
    text = out.read_text()
    assert "non-finite loss at step 7" in text  # the failed run's reason
    assert text.count('<tr class="bad">') == 1


def test_groups_keep_configurations_reported_twice_once(tmp_path):
    from pathlib import Path

    from listcopy.sweep.grid import parse_grid
    from listcopy.sweep.store import DB_FILE, Store

    grid = {"task": {"n_digits": 10}, "seeds": [0],
            "specs": [{"name": "a"}, {"name": "b", "model.n_layers": 3}, {"name": "c",
                                                                           "model.n_layers": 2}]}
    runs = parse_grid(grid).runs()
    assert len(runs) == 2  # a and b are one configuration
    d = tmp_path / "s"
    d.mkdir()
    with Store(d / DB_FILE) as store:
        store.add(runs, lambda r: Path("runs") / r.key)
        store.start(r.key for r in runs)
        for r in runs:
            store.finish(r.key, {"status": "done", "acc": 0.5 + r.config.model.n_layers / 10,
                                 "steps": 10})
    rows = load_rows(d)
    assert [g for g, _ in groups(rows)] == ["a", "b", "c"]
    _, ys, z, n = mean_acc_grid(rows, ("model.d_model", "model.n_layers"))
    assert ys == [2, 3] and n == [[1], [1]] and z == [[pytest.approx(0.7)], [pytest.approx(0.8)]]
    info = sweep_report(d, tmp_path / "s.html", progress=False)
    assert len(info.figures) == 3


def test_empty_and_unfinished_sweeps(tmp_path):
    from pathlib import Path

    from listcopy.sweep.grid import parse_grid
    from listcopy.sweep.store import DB_FILE, Store

    d = tmp_path / "pending"
    d.mkdir()
    with Store(d / DB_FILE) as store:
        store.add(parse_grid({"seeds": [0, 1]}).runs(), lambda r: Path("runs") / r.key)
    info = sweep_report(d, tmp_path / "p.html", progress=False)
    assert info.figures == []
    assert "No finished runs yet." in (tmp_path / "p.html").read_text()


def test_bad_input_is_one_line(sweep_dir, tmp_path):
    with pytest.raises(ConfigError, match="no sweep database"):
        sweep_report(tmp_path, tmp_path / "x.html", progress=False)
    with pytest.raises(ConfigError, match="not a setting"):
        sweep_report(sweep_dir, tmp_path / "x.html", axes=("model.d_model", "nope"),
                     progress=False)
    with pytest.raises(ConfigError, match="two different keys"):
        sweep_report(sweep_dir, tmp_path / "x.html", axes=("d_model", "model.d_model"),
                     progress=False)
    with pytest.raises(ConfigError, match="two different keys"):
        sweep_report(sweep_dir, tmp_path / "x.html", axes=("d_model",), progress=False)
    with pytest.raises(ConfigError, match="is a directory"):
        sweep_report(sweep_dir, tmp_path, progress=False)
    assert not (tmp_path / "x.html").exists()
