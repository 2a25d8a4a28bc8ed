"""Experiment logging to Weights & Biases, in its offline mode (files written locally, nothing
sent): the same metrics as run.json, per member for ensembles; no cost when unused; one line and
exit 2 without the package."""

import json
import os
import subprocess
import sys


from tests.conftest import run_cli
from tests.test_cli import assert_one_line_error
from tests.wandb_records import read_offline_run

SMALL = ["--set", "task.n_digits=20", "--set", "train.max_steps=150", "--set",
         "train.eval_every=50", "--quiet"]


def offline(tmp_path):
    env = {**os.environ, "WANDB_MODE": "offline", "WANDB_SILENT": "true",
           "WANDB_DIR": str(tmp_path), "WANDB_CONFIG_DIR": str(tmp_path / "config"),
           "WANDB_CACHE_DIR": str(tmp_path / "cache"), "WANDB_API_KEY": ""}
    env.pop("WANDB_API_KEY")
    return env


def cli(env, *args, cwd=None):
    exe = [sys.executable, "-m", "listcopy.cli"]
    return subprocess.run([*exe, *args], capture_output=True, text=True, env=env, timeout=600,
                          stdin=subprocess.DEVNULL, cwd=cwd)  # never a terminal: W&B cannot prompt


def test_an_ensemble_logs_every_members_history_offline(tmp_path):
    out = tmp_path / "runs"
    result = cli(offline(tmp_path), "train", "--seeds", "3,5", "--keep", "best", "--log", "wandb",
                 "--set", "train.lr_schedule=warmup_cosine", "--set", "train.warmup_steps=20",
                 *SMALL, "--out", str(out))
    assert result.returncode == 0, result.stderr
    logged = read_offline_run(out)
    assert logged["config"]["seeds"] == [3, 5]
    assert logged["config"]["train"]["lr_schedule"] == "warmup_cosine"
    steps = [h["step"] for h in logged["history"]]
    assert steps == [50, 100, 150]
    for seed in (3, 5):
        history = json.loads((out / f"seed-{seed}" / "run.json").read_text())["history"]
        mine = [{k[len(f"seed-{seed}/"):]: v for k, v in h.items() if k.startswith(f"seed-{seed}/")}
                for h in logged["history"]]
        assert mine == [{k: v for k, v in h.items() if k != "step"} for h in history]
        assert set(mine[0]) == {"train_loss", "val_loss", "acc", "seq_acc", "lr"}
        assert logged["summary"][f"seed-{seed}/final/acc"] == history[-1]["acc"]
    summary = json.loads((out / "summary.json").read_text())
    assert logged["summary"]["kept/seed"] == summary["kept"]["seed"]


def test_one_run_logs_run_json_keys_without_a_prefix(tmp_path):
    out = tmp_path / "one"
    result = cli(offline(tmp_path), "train", "--log", "wandb", *SMALL, "--out", str(out))
    assert result.returncode == 0, result.stderr
    logged = read_offline_run(out)
    history = json.loads((out / "run.json").read_text())["history"]
    assert [{k: v for k, v in h.items() if not k.startswith("_")} for h in logged["history"]] == history
    assert logged["summary"]["final/status"] == "done"


def test_log_wandb_without_an_api_key_is_one_line_and_leaves_no_folder(tmp_path):
    """No key anywhere W&B looks (environment, .netrc, settings files) and no terminal to ask on:
    W&B fails before it contacts anything; the folders made for the run are gone again, a folder
    that was there stays as it was."""
    home = tmp_path / "home"
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_")}
    env.update(HOME=str(home), NETRC=str(home / ".netrc"), WANDB_CONFIG_DIR=str(home / "config"),
               WANDB_CACHE_DIR=str(home / "cache"), WANDB_SILENT="true")
    kept = tmp_path / "kept"
    kept.mkdir()
    (kept / "notes.txt").write_text("mine")
    for out in (tmp_path / "runs" / "x12", kept):
        result = cli(env, "train", "--log", "wandb", *SMALL, "--out", str(out), cwd=tmp_path)
        assert_one_line_error(result, "--log wandb", "No API key", "wandb login", "WANDB_API_KEY",
                              "WANDB_MODE=offline")
    assert not (tmp_path / "runs").exists()
    assert [p.name for p in kept.iterdir()] == ["notes.txt"]
    assert (kept / "notes.txt").read_text() == "mine"


def test_training_does_not_import_wandb():
    code = "import sys, listcopy.training, listcopy.cli; assert 'wandb' not in sys.modules"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


def test_without_the_package_log_wandb_is_one_line_and_exit_2(tmp_path):
    code = ("import sys; sys.modules['wandb'] = None; from listcopy.cli import main;"
            " sys.exit(main(sys.argv[1:]))")
    result = subprocess.run([sys.executable, "-c", code, "train", "--log", "wandb", *SMALL,
                             "--out", str(tmp_path / "r")], capture_output=True, text=True)
    assert_one_line_error(result, "--log wandb", "not installed", 'pip install -e ".[wandb]"')
    assert not (tmp_path / "r").exists()


def test_an_unknown_tracker_is_one_line_and_exit_2(tmp_path):
    assert_one_line_error(run_cli("train", "--log", "tensorboard", "--out", str(tmp_path / "r")),
                          "--log 'tensorboard'", "wandb")
