import argparse
import json

import pytest

from listcopy.analysis.cli import add_parser
from listcopy.config import ConfigError


def _parse(*argv):
    parser = argparse.ArgumentParser(prog="listcopy")
    add_parser(parser.add_subparsers(dest="command", required=True))
    return parser.parse_args(["analyze", *argv])


def test_analyze_command_writes_json(fixtures_dir, tmp_path, capsys):
    out = tmp_path / "a.json"
    args = _parse(str(fixtures_dir / "seed_default_1000.pt"), "--only", "attention,skip_ablation",
                  "--json", str(out), "--quiet")
    assert args.func(args) == 0
    result = json.loads(out.read_text())
    assert set(result) == {"name", "config", "metrics", "per_position_acc", "attention",
                           "skip_ablation"}
    assert result["name"] == "3layer_100dig_8d"
    assert result["metrics"]["acc"] == pytest.approx(0.75775, abs=1e-6)
    printed = capsys.readouterr().out
    assert "skip connection, zero:" in printed and "3layer_100dig_8d" in printed


def test_analyze_command_json_to_stdout(fixtures_dir, capsys):
    args = _parse(str(fixtures_dir / "seed_default_1000.pt"), "--only", "metrics", "--json", "-",
                  "--quiet")
    assert args.func(args) == 0
    assert set(json.loads(capsys.readouterr().out)) == {"name", "config", "metrics",
                                                        "per_position_acc"}


def test_analyze_command_rejects_unknown_names_before_loading(tmp_path):
    args = _parse(str(tmp_path / "missing.pt"), "--only", "nope")
    with pytest.raises(ConfigError, match="unknown analysis 'nope'"):
        args.func(args)


def test_analyze_command_missing_checkpoint(tmp_path):
    from listcopy.checkpoint import CheckpointError

    args = _parse(str(tmp_path / "missing.pt"), "--only", "attention")
    with pytest.raises(CheckpointError):
        args.func(args)


def test_analyze_command_bad_example(fixtures_dir):
    args = _parse(str(fixtures_dir / "seed_default_1000.pt"), "--only", "attention", "--example", "2000")
    with pytest.raises(ConfigError, match="example = 2000"):
        args.func(args)
