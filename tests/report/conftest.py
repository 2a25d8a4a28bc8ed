"""Shared, session-scoped inputs of the report tests: models, analyses and a fabricated sweep.

The one expensive thing, the full analysis of the default model (UMAP included), is done once
and shared by the tests that need it.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from listcopy import Config

FIXTURES = Path(__file__).parent.parent / "fixtures"
ARTIFACTS = Path(__file__).parent.parent.parent / "test-artifacts" / "report"

# A tiny task trained in about a second: a run directory with a metrics history.
TINY = ["task.n_digits=10", "train.batch_size=32", "train.max_steps=300", "train.eval_every=50",
        "train.device=cpu"]


@pytest.fixture(scope="session")
def artifacts() -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    return ARTIFACTS


@pytest.fixture(scope="session")
def default_model():
    """The seed's own default model (3layer_100dig_8d) after 1000 steps."""
    from listcopy.checkpoint import load

    return load(FIXTURES / "seed_default_1000.pt")


@pytest.fixture(scope="session")
def default_analysis(default_model):
    """Every analysis of the default model, UMAP included (the costly part of these tests)."""
    from listcopy.analysis import analyze

    model, config = default_model
    return analyze(model, config)


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory):
    """A listcopy run directory (run.json with a history) of a tiny model."""
    from listcopy.training import train

    out = tmp_path_factory.mktemp("tiny") / "run"
    train(Config().override(TINY), out, progress=False)
    return out


@pytest.fixture(scope="session")
def odd_analysis():
    """Analysis (no UMAP) of an untrained model of another shape: list_len 3, 2 layers, 2 heads."""
    from listcopy.analysis import analyze
    from listcopy.model import build_model

    config = Config().override(["task.n_digits=6", "task.list_len=3", "model.n_layers=2",
                                "model.n_heads=2", "model.d_model=8"])
    model = build_model(config, torch.Generator().manual_seed(1)).eval()
    return model, config, analyze(model, config, umap=False)


# ---- a sweep database with known numbers ------------------------------------------------------

SWEEP_GRID = {
    "task": {"n_digits": 10},
    "axes": {"model.d_model": [8, 16], "model.n_layers": [1, 2]},
    "seeds": [0, 1, 2],
}


def acc_of(d_model: int, n_layers: int, seed: int) -> float:
    """The accuracy the fabricated sweep records for each run: distinct and easy to average."""
    return round(0.5 + 0.01 * d_model + 0.1 * n_layers + 0.001 * seed, 6)


def make_sweep(directory: Path, fail: tuple[int, int, int] | None = (16, 2, 2)) -> Path:
    """A sweep directory whose database holds the grid above, every run finished with
    ``acc_of``; the run ``fail`` (d_model, n_layers, seed) failed. No training."""
    from listcopy.sweep.grid import parse_grid
    from listcopy.sweep.store import DB_FILE, Store

    directory.mkdir(parents=True, exist_ok=True)
    runs = parse_grid(SWEEP_GRID).runs()
    with Store(directory / DB_FILE) as store:
        store.add(runs, lambda run: Path("runs") / run.key)
        store.start(r.key for r in runs)
        for run in runs:
            m = run.config.model
            seed = run.config.train.seed
            if fail == (m.d_model, m.n_layers, seed):
                store.finish(run.key, {"status": "failed", "error": "non-finite loss at step 7"})
                continue
            acc = acc_of(m.d_model, m.n_layers, seed)
            reached = 100 * (1 + seed) if acc >= 0.72 else None
            store.finish(run.key, {"status": "done", "stop_reason": "max_steps", "steps": 500,
                                   "loss": 0.1, "acc": acc, "seq_acc": acc - 0.05,
                                   "steps_to_threshold": reached, "wall_time_s": 1.0})
    return directory


@pytest.fixture(scope="session")
def sweep_dir(tmp_path_factory):
    return make_sweep(tmp_path_factory.mktemp("sweep") / "grid")


def dump(obj) -> str:
    return json.dumps(obj, sort_keys=True)
