"""``listcopy analyze``, driven as a user does (``cli.main``): output, files, exit codes."""

import json
import os

import pytest

from listcopy import cli


def analyze(capsys, *argv):
    """``listcopy analyze ARGV``: (exit code, stdout, stderr lines)."""
    code = cli.main(["analyze", *argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err.strip().splitlines()


def test_analyze_command_writes_json(fixtures_dir, tmp_path, capsys):
    out = tmp_path / "a.json"
    code, printed, _ = analyze(capsys, str(fixtures_dir / "seed_default_1000.pt"), "--only",
                               "attention,skip_ablation", "--json", str(out), "--quiet")
    assert code == 0
    result = json.loads(out.read_text())
    assert set(result) == {"name", "config", "metrics", "per_position_acc", "attention",
                           "skip_ablation"}
    assert result["name"] == "3layer_100dig_8d"
    assert result["metrics"]["acc"] == pytest.approx(0.75775, abs=1e-6)
    assert "skip connection, zero:" in printed and "3layer_100dig_8d" in printed


def test_analyze_command_json_to_stdout(fixtures_dir, capsys):
    code, printed, _ = analyze(capsys, str(fixtures_dir / "seed_default_1000.pt"), "--only",
                               "metrics", "--json", "-", "--quiet")
    assert code == 0
    assert set(json.loads(printed)) == {"name", "config", "metrics", "per_position_acc"}


def test_analyze_command_rejects_unknown_names_before_loading(tmp_path, capsys):
    code, _, err = analyze(capsys, str(tmp_path / "missing.pt"), "--only", "nope")
    assert code == 2 and len(err) == 1 and "unknown analysis 'nope'" in err[0]


def test_analyze_command_missing_checkpoint(tmp_path, capsys):
    code, _, err = analyze(capsys, str(tmp_path / "missing.pt"), "--only", "attention")
    assert code == 2 and len(err) == 1 and "missing.pt" in err[0]


def test_analyze_command_bad_example(fixtures_dir, capsys):
    code, _, err = analyze(capsys, str(fixtures_dir / "seed_default_1000.pt"), "--only",
                           "attention", "--example", "2000")
    notice, error = err  # the .pt file's inferred configuration (one line), then the error
    assert "seed_default_1000.pt: 3layer_100dig_8d" in notice
    assert code == 2 and error.startswith("listcopy analyze: error:") and "example = 2000" in error


def test_analyze_command_val_rows(fixtures_dir, capsys):
    code, printed, _ = analyze(capsys, str(fixtures_dir / "seed_default_1000.pt"), "--only",
                               "metrics", "--val-rows", "300", "--json", "-", "--quiet")
    assert code == 0 and json.loads(printed)["metrics"]["n_val"] == 300


@pytest.mark.parametrize("option, needle", [(["--threads", "0"], "--threads 0: must be >= 1"),
                                            (["--seed", "-1"], "--seed -1: must be >= 0"),
                                            (["--val-rows", "0"], "--val-rows 0: must be >= 1")])
def test_analyze_command_bad_options(fixtures_dir, capsys, option, needle):
    code, _, err = analyze(capsys, str(fixtures_dir / "seed_default_1000.pt"), *option)
    assert code == 2 and len(err) == 1 and needle in err[0]


@pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="needs /proc (no new files there)")
def test_analyze_command_refuses_an_unwritable_json_before_any_work(fixtures_dir, capsys):
    code, printed, err = analyze(capsys, str(fixtures_dir / "seed_default_1000.pt"), "--only",
                                 "parameters", "--json", "/proc/x.json", "--quiet")
    assert code == 2 and len(err) == 1 and printed == "", (printed, err)
    assert "--json /proc/x.json: cannot create files in /proc" in err[0]
