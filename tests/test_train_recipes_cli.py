"""``listcopy train`` with the research line's recipe: --keep (retries as seeds trained at once),
the new settings from the command line, and their one-line errors."""

import json

import pytest

from tests.conftest import run_cli
from tests.test_cli import assert_one_line_error

SMALL = ["--set", "task.n_digits=20", "--set", "train.max_steps=200", "--set",
         "train.eval_every=50", "--quiet"]


@pytest.mark.parametrize("args, needles", [
    (["--seeds", "0-1", "--keep", "worst"], ["--keep 'worst'", "best or first:X"]),
    (["--seeds", "0-1", "--keep", "first:1.2"], ["--keep 'first:1.2'"]),
    (["--keep", "best"], ["--keep needs --seeds"]),
    (["--set", "train.lr_schedule=linear"], ["train.lr_schedule", "constant, warmup_cosine"]),
    (["--set", "train.warmup_steps=-5"], ["train.warmup_steps"]),
    (["--set", "train.max_grad_norm=-1"], ["train.max_grad_norm"]),
    (["--set", "train.patience=-1"], ["train.patience"]),
    (["--set", "train.patience_threshold=2"], ["train.patience_threshold"]),
    (["--set", "train.fresh_data=true", "--reshuffle"], ["train.fresh_data"]),
])
def test_bad_recipe_options_exit_2_with_one_line(tmp_path, args, needles):
    result = run_cli("train", *args, "--out", str(tmp_path / "r"), "--quiet")
    assert_one_line_error(result, *needles)
    assert not (tmp_path / "r").exists()


def test_keep_writes_the_chosen_member_where_eval_finds_it(tmp_path):
    out = tmp_path / "retries"
    result = run_cli("train", "--seeds", "0-2", "--keep", "first:0.99", *SMALL,
                     "--set", "train.batch_size=2048", "--set", "train.max_grad_norm=1.0",
                     "--out", str(out))
    assert result.returncode == 0, result.stderr
    summary = json.loads((out / "summary.json").read_text())
    accs = [row["acc"] for row in summary["rows"]]
    best = max(range(3), key=lambda i: (accs[i], -i))  # none reaches 0.99 in 200 steps: the best
    assert max(accs) < 0.99
    assert summary["kept"]["seed"] == best and summary["kept"]["rule"] == "first:0.99"
    assert summary["kept"]["run_dir"] == str(out / "kept")
    assert f"no seed reached 0.99, kept the best: seed {best}" in result.stdout
    evaluated = run_cli("eval", str(out / "kept"), "--json")
    assert evaluated.returncode == 0, evaluated.stderr
    assert json.loads(evaluated.stdout)["acc"] == pytest.approx(accs[best], abs=1e-6)
    kept = json.loads((out / "kept" / "run.json").read_text())
    assert kept["config"]["train"]["seed"] == best and kept["kept"]["member_dir"] == str(out / f"seed-{best}")


def test_patience_stops_a_run_and_says_so(tmp_path):
    result = run_cli("train", *SMALL, "--set", "train.max_steps=5000", "--set", "train.patience=1",
                     "--set", "train.patience_threshold=0", "--set", "train.eval_every=10",
                     "--set", "train.lr=0.2", "--out", str(tmp_path / "p"))
    run = json.loads((tmp_path / "p" / "run.json").read_text())
    assert run["stop_reason"] == "patience" and run["step"] < 5000
    assert "no improvement in 1 evaluations" in result.stdout
