"""The console command: outputs, and one-line errors with exit 2 for bad input."""

import json
import subprocess
import sys

import pytest

from tests.conftest import run_cli


def assert_one_line_error(result, *needles):
    assert result.returncode == 2, (result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]


@pytest.mark.parametrize("sets, needle", [
    (["model.n_heads=3"], "model.d_model"),
    (["task.n_digits=1"], "task.n_digits"),
    (["task.list_len=0"], "task.list_len"),
    (["train.lr=0"], "train.lr"),
    (["train.lr=-1"], "train.lr"),
    (["task.train_frac=1.2"], "task.train_frac"),
    (["train.early_stop_acc=1.01"], "train.early_stop_acc"),
    (["train.early_stop_acc=0"], "train.early_stop_acc"),
    (["model.width=3"], "model.width"),
    (["nosuch.key=1"], "nosuch"),
    (["model.d_model"], "section.key=value"),
    (["model.ln=maybe"], "model.ln"),
])
def test_bad_config_values_exit_2_with_one_line(tmp_path, sets, needle):
    args = [a for s in sets for a in ("--set", s)]
    result = run_cli("train", *args, "--out", str(tmp_path / "r"), "--quiet")
    assert_one_line_error(result, needle)
    assert not (tmp_path / "r").exists()  # nothing half-written


def test_bad_config_file(tmp_path):
    f = tmp_path / "bad.toml"
    f.write_text("[model]\nd_model = [\n")
    assert_one_line_error(run_cli("train", "--config", str(f)), "bad.toml", "invalid TOML")
    assert_one_line_error(run_cli("train", "--config", str(tmp_path / "none.toml")), "not found")
    assert_one_line_error(run_cli("train", "--seeds", "5-2"), "--seeds")


def test_missing_and_corrupt_checkpoints(tmp_path):
    assert_one_line_error(run_cli("eval", str(tmp_path / "nope.pt")), "nope.pt")
    bad = tmp_path / "3layer_100dig_8d.pt"
    bad.write_bytes(b"not a checkpoint")
    assert_one_line_error(run_cli("eval", str(bad)), "3layer_100dig_8d.pt")
    assert_one_line_error(run_cli("info", str(tmp_path)), str(tmp_path))


def test_eval_info_export_on_a_seed_checkpoint(fixtures, tmp_path):
    result = run_cli("eval", str(fixtures / "seed_default_1000.pt"), "--json")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 1
    metrics = json.loads(lines[0])
    assert set(metrics) == {"loss", "acc", "seq_acc", "n_val", "per_position_acc"}
    assert metrics["acc"] == pytest.approx(0.75775) and metrics["n_val"] == 2000
    assert len(metrics["per_position_acc"]) == 2
    assert sum(metrics["per_position_acc"]) / 2 == pytest.approx(metrics["acc"])

    info = run_cli("info", str(fixtures / "3layer_100dig_8d.pt"))
    assert info.returncode == 0
    assert "Total parameters: 2621" in info.stdout and "Trainable parameters: 2040" in info.stdout
    assert "blocks.2.attn.W_K" in info.stdout and "W_V" not in info.stdout  # frozen not listed

    out = tmp_path / "x.pt"
    exported = run_cli("export", str(fixtures / "seed_default_1000.pt"), "--out", str(out))
    assert exported.returncode == 0 and out.exists()
    again = run_cli("eval", str(out), "--json")
    assert json.loads(again.stdout) == metrics


def test_train_writes_a_run_directory_and_summary_for_seeds(tmp_path):
    result = run_cli("train", "--set", "task.n_digits=10", "--set", "train.max_steps=60",
                     "--set", "train.eval_every=20", "--set", "train.batch_size=16",
                     "--seeds", "0-2", "--out", str(tmp_path / "s"), "--quiet")
    assert result.returncode == 0, result.stderr
    for s in range(3):
        assert (tmp_path / "s" / f"seed-{s}" / "model.safetensors").exists()
    summary = json.loads((tmp_path / "s" / "summary.json").read_text())
    assert [r["seed"] for r in summary["rows"]] == [0, 1, 2] and summary["n"] == 3
    assert "| seed |" in result.stdout and "3 seeds" in result.stdout


def test_help_does_not_import_torch():
    code = ("import sys, contextlib, io\nfrom listcopy.cli import main\n"
            "with contextlib.suppress(SystemExit), contextlib.redirect_stdout(io.StringIO()):\n"
            "    main(['--help'])\nprint('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.stdout.strip() == "False", out.stderr


def test_help_lists_every_command():
    result = run_cli("--help")
    assert result.returncode == 0
    listed = [line.split()[0] for line in result.stdout.split("COMMAND\n", 1)[1].splitlines()
              if line.startswith("    ") and not line.startswith("     ")]
    assert listed == ["train", "eval", "info", "export", "analyze", "ablate", "report", "paper",
                      "sweep", "results", "frontier", "bench", "sae"]


@pytest.mark.parametrize("args, needle", [
    (["--seeds", "0-3,2"], "--seeds '0-3,2': seed 2 repeated"),
    (["--seeds", "0-100000"], "at most 100,000 seeds"),
    (["--seeds", "x"], "--seeds 'x': use a range"),
    (["--seeds", f"{2**63}"], f"train.seed = {2**63}: must be at most 2**63 - 1"),
    (["--threads", "-1"], "--threads -1: must be >= 1"),
])
def test_bad_train_options_exit_2_before_any_work(tmp_path, args, needle):
    assert_one_line_error(run_cli("train", *args, "--out", str(tmp_path / "r"), "--quiet"), needle)
    assert not (tmp_path / "r").exists()
