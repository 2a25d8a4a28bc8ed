"""``listcopy paper`` end to end on small settings: both models trained, analysed, one page and
one JSON written; a given model used instead of training; bad input refused before any work."""

import json

import pytest

from listcopy.paper import paper_config, paper_report
from listcopy.cli import main
from listcopy.paper.settings import MODELS, PAPER_NUMBERS

SMALL = ["task.n_digits=12", "model.d_model=16", "train.max_steps=300", "train.eval_every=100",
         "train.batch_size=64", "train.device=cpu"]


def test_the_paper_settings():
    c = paper_config("2layer")
    assert (c.model.n_layers, c.model.d_model, c.task.n_digits, c.train.batch_size) == (2, 64, 100, 128)
    assert not c.model.ln and not c.model.use_bias and c.model.freeze_wv and c.model.freeze_wo
    assert paper_config("3layer", ["model.d_model=8"]).model.d_model == 8
    assert set(MODELS) == set(PAPER_NUMBERS) == {"2layer", "3layer"}


@pytest.mark.slow
def test_paper_end_to_end(tmp_path):
    info = paper_report(tmp_path / "p", overrides=SMALL, umap=False, progress=False)
    assert info.sections == ["2layer", "3layer"]
    assert set(info.models) == {"2layer", "3layer"} and all(p.is_dir() for p in info.models.values())
    r = json.loads(info.json.read_text())
    assert set(r) == {"2layer", "3layer"}
    two = r["2layer"]
    assert two["config"]["model"]["n_layers"] == 2 and two["config"]["task"]["n_digits"] == 12
    assert {"metrics", "mean_attention", "order_by_scale", "critical_edges", "moderation"} <= set(two)
    assert two["moderation"]["edges"] == "1:4-3"
    text = info.html.read_text()
    assert "Order by Scale, reproduced with listcopy" in text and "2layer_figure1" in text
    assert "the paper&#x27;s variant (task.mask_token=true, model.layer0_mask=true" in text
    assert two["config"]["task"]["mask_token"] and two["config"]["model"]["layer0_mask"]

    # again, with the 2-layer model given: nothing retrained, the same numbers for it
    again = paper_report(tmp_path / "q", models=[info.models["2layer"]], overrides=SMALL,
                         umap=False, progress=False)
    assert again.models["2layer"] is None
    assert json.loads(again.json.read_text())["2layer"]["metrics"] == two["metrics"]


def _refused(capsys, words, *argv):
    """``listcopy paper ARGV`` ends with one line naming ``words`` and exit status 2."""
    assert main(["paper", *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "Traceback" not in err and words in err, err


def test_bad_input_is_refused_before_training(tmp_path, fixtures, capsys):
    _refused(capsys, "model.nonsense", "--out", str(tmp_path / "p"), "--set", "model.nonsense=1",
             "--quiet")
    f = tmp_path / "file"
    f.write_text("x")
    _refused(capsys, "not a directory", "--out", str(f), "--quiet")
    from listcopy import Config, train

    one = tmp_path / "one_layer"
    train(Config().override(["task.n_digits=5", "model.n_layers=1", "model.d_model=4",
                             "train.max_steps=10", "train.device=cpu"]), one, progress=False)
    _refused(capsys, "a 1-layer model; the paper's have 2 and 3 layers", "--out", str(tmp_path / "p"),
             "--model", str(one), "--quiet")
    seed = str(fixtures / "seed_default_1000.pt")  # 3 layers
    _refused(capsys, "a second 3-layer model", "--out", str(tmp_path / "p"), "--model", seed,
             "--model", seed, "--quiet")
    assert not (tmp_path / "p").exists()


def test_the_grid_file_is_table_4():
    from pathlib import Path

    from listcopy.paper.settings import TABLE4
    from listcopy.sweep import load_grid

    points = load_grid(Path(__file__).parent.parent / "examples" / "paper_grid.toml").points()
    keys = {(p.config.model.d_model, p.config.model.ln, p.config.model.use_bias,
             not p.config.model.freeze_wv, not p.config.model.freeze_wo) for p in points}
    assert keys == set(TABLE4) and len(points) == 3 * len(TABLE4)
    assert {p.config.model.n_layers for p in points} == {2}


def test_table4_rows_by_hand():
    from listcopy import Config
    from listcopy.paper.page import table4_rows

    def row(acc, status="done", **model):
        sets = [f"model.{k}={str(v).lower()}" for k, v in model.items()]
        return {"config": Config().override(["model.n_layers=2", *sets]), "acc": acc,
                "status": status}

    runs = [row(0.9, d_model=64), row(0.95, d_model=64), row(0.1, "failed", d_model=64),
            row(0.5, d_model=64, ln=True, freeze_wv=False),
            {"config": Config(), "acc": 0.99, "status": "done"}]  # 3 layers: not Table 4's
    rows = table4_rows(runs)
    assert rows == [
        {"d_model": 64, "LN": False, "bias": False, "W_V learned": False, "W_O learned": False,
         "paper": 0.9180, "listcopy": pytest.approx(0.925), "min": 0.9, "max": 0.95,
         "above 0.9": 0.5, "runs": 2},
        {"d_model": 64, "LN": True, "bias": False, "W_V learned": True, "W_O learned": False,
         "paper": 0.9089, "listcopy": 0.5, "min": 0.5, "max": 0.5, "above 0.9": 0.0, "runs": 1}]
