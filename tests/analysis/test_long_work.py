"""Long analyses show their progress and stop at Ctrl-C; values they cannot use are one line."""

from __future__ import annotations

import os

import pytest
import torch

from listcopy import cli
from listcopy.analysis import critical as critical_module
from listcopy.analysis.edges import allowed_edges, edge_ablation
from listcopy.config import Config, ConfigError
from listcopy.model import build_model
from listcopy.task import dataset


@pytest.fixture
def small():
    config = Config().override(["task.n_digits=6", "task.list_len=3"])
    return build_model(config, torch.Generator().manual_seed(0)).eval(), config, dataset(config)


def n_edges(config):
    from listcopy.analysis.edges import n_edges as count

    return count(config)


def test_edge_ablation_reports_every_edge(small):
    model, config, data = small
    seen = []
    edge_ablation(model, config, data, progress=lambda done, total: seen.append((done, total)))
    total = config.model.n_layers * len(allowed_edges(3))
    assert n_edges(config) == total
    assert seen == [(i, total) for i in range(1, total + 1)]


def test_a_list_len_64_model_has_thousands_of_edges():
    config = Config().override(["task.list_len=64", "task.n_digits=2"])
    assert n_edges(config) == 3 * len(allowed_edges(64)) > 10_000


@pytest.mark.parametrize("tolerance", [float("inf"), float("nan"), -1.0])
def test_a_tolerance_that_is_not_finite_is_refused(small, tolerance):
    model, config, data = small
    with pytest.raises(ConfigError, match="must be a finite number >= 0"):
        edge_ablation(model, config, data, tolerance=tolerance)


@pytest.mark.parametrize("value", ["inf", "nan", "-1"])
def test_analyze_tolerance_inf_is_one_line(fixtures_dir, capsys, value):
    code = cli.main(["analyze", str(fixtures_dir / "3layer_100dig_8d.pt"), "--only", "edges",
                     "--tolerance", value])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and f"--tolerance {float(value)}" in err[0], err


def test_analyze_shows_edge_progress_on_stderr(fixtures_dir, capsys, monkeypatch):
    """With progress on (no --quiet) the edges advance a bar on stderr, one step per edge."""
    import sys

    import tqdm.auto

    bars = []

    class Bar:
        def __init__(self, total, desc, file, **kwargs):
            self.total, self.desc, self.file, self.n = total, desc, file, 0
            bars.append(self)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            pass

        def update(self, n):
            self.n += n

    monkeypatch.setattr(tqdm.auto, "tqdm", Bar)
    path = str(fixtures_dir / "seed_default_1000.pt")
    assert cli.main(["analyze", path, "--only", "edges"]) == 0
    assert [(b.desc, b.total, b.n, b.file) for b in bars] == [
        ("edges", n_edges(Config()), n_edges(Config()), sys.stderr)]
    assert cli.main(["analyze", path, "--only", "edges", "--quiet"]) == 0
    assert len(bars) == 1  # --quiet: no bar


def test_ctrl_c_inside_edges_stops_and_writes_nothing(fixtures_dir, tmp_path, capsys, monkeypatch):
    """A Ctrl-C between two edges (as SIGINT arrives while one validation pass runs) ends the
    command at once with exit 130, and the --json file is not written. (The passes run in
    ``critical.single_edge_metrics``, shared with the critical-edge search.)"""
    real = critical_module.val_metrics
    calls = []

    def interrupted(*args, **kwargs):
        calls.append(1)
        if len(calls) == 4:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(critical_module, "val_metrics", interrupted)
    out = tmp_path / "a.json"
    code = cli.main(["analyze", str(fixtures_dir / "seed_default_1000.pt"), "--only", "edges",
                     "--json", str(out), "--quiet"])
    assert code == 130 and len(calls) == 4
    err = capsys.readouterr().err
    # after the one notice line of what the .pt file was loaded as
    assert err.strip().splitlines()[-1] == "listcopy analyze: interrupted"
    assert "Traceback" not in err and len(err.strip().splitlines()) == 2
    assert os.listdir(tmp_path) == []


def test_report_of_a_d_model_1_model_says_why_there_is_no_3d_pca(tmp_path, capsys):
    from listcopy.checkpoint import MODEL_FILE, RUN_FILE, write_json, save_tensors

    config = Config().override(["task.n_digits=10", "model.d_model=1"])
    model = build_model(config, torch.Generator().manual_seed(0))
    run = tmp_path / "run"
    save_tensors(run / MODEL_FILE, model.state_dict())
    write_json(run / RUN_FILE, {"name": config.name, "config": config.to_dict(), "step": 0,
                                "status": "done", "metrics": {}, "history": []})
    out = tmp_path / "r.html"
    code = cli.main(["report", str(run), "--out", str(out), "--only", "geometry", "--no-umap",
                     "--quiet"])
    assert code == 0, capsys.readouterr().err
    text = out.read_text()
    assert "No 3-D PCA: the digit vectors have 1 principal component (d_model 1, 10 digits)" in text
