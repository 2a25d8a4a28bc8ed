"""``listcopy sae train|eval|analyze`` through the functions the CLI calls: results, and bad input
as one line with exit status 2 (no traceback, nothing written)."""

import argparse
import json
import os

import pytest
import torch

from listcopy.cli import main
from listcopy.sae.cli import register

from .conftest import SMALL_SAE
from .reference import line_checkpoint


def test_register_adds_the_sae_command():
    parser = argparse.ArgumentParser(prog="listcopy")
    register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["sae", "train", "m", "--d-sae", "8", "--k", "2", "--pos", "d1,SEP"])
    assert (args.command, args.subcommand, args.d_sae, args.k, args.positions) == (
        "sae", "train", 8, 2, "d1,SEP")


def _bad(capsys, argv, words, tmp_path=None):
    code = main(argv)
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    assert "\n" not in err and "Traceback" not in err and words in err, err
    return err


def test_train_bad_input(capsys, model_dir, tmp_path):
    out = tmp_path / "never"
    base = ["sae", "train", str(model_dir), "--out", str(out), "--steps", "5", "--device", "cpu"]
    _bad(capsys, base + ["--hook", "blocks.9.hook_resid_post"], "does not exist")
    _bad(capsys, base + ["--k", "20", "--d-sae", "10"], "sae.k = 20: must be at most sae.d_sae = 10")
    _bad(capsys, base + ["--arch", "gated"], "sae.arch")
    _bad(capsys, base + ["--lr", "1e38"], "sae.lr")
    _bad(capsys, base + ["--pos", "o7"], "position 'o7'")
    _bad(capsys, ["sae", "train", str(tmp_path / "missing"), "--out", str(out)], "missing")
    assert not out.exists()


def test_a_failed_run_is_one_line_and_exit_1(capsys, monkeypatch, model_dir):
    from listcopy.sae import run
    from listcopy.sae.train import SAEDiverged

    def diverge(*args, **kwargs):
        raise SAEDiverged("SAE training diverged: non-finite loss at step 100")

    monkeypatch.setattr(run, "train_sae", diverge)
    assert main(["sae", "train", str(model_dir)]) == 1
    err = capsys.readouterr().err.strip()
    assert err == "listcopy sae train: error: SAE training diverged: non-finite loss at step 100"


def test_eval_bad_input(capsys, model_dir, sae_dir, tmp_path):
    wide = tmp_path / "wide.pt"
    torch.save(line_checkpoint(d=64, d_sae=12, seed=0), wide)
    _bad(capsys, ["sae", "eval", str(wide), "--model", str(model_dir)], "reads 64-wide")
    broken = tmp_path / "broken.pt"
    broken.write_bytes(b"not a checkpoint")
    _bad(capsys, ["sae", "eval", str(broken), "--model", str(model_dir)], str(broken))
    _bad(capsys, ["sae", "eval", str(sae_dir), "--model", str(model_dir), "--hook",
                  "blocks.0.attn.hook_z2"], "does not exist")
    _bad(capsys, ["sae", "eval", str(sae_dir), "--model", str(model_dir), "--split", "test"],
         "split 'test'")
    _bad(capsys, ["sae", "analyze", str(sae_dir), "--model", str(model_dir), "--latents", "99"],
         "latent 99")
    _bad(capsys, ["sae", "analyze", str(sae_dir), "--model", str(model_dir), "--factors", "1,x"],
         "--factors")
    for option in ("--factors", "--latents"):  # empty: not taken for the defaults
        _bad(capsys, ["sae", "analyze", str(sae_dir), "--model", str(model_dir), option, ""],
             f"{option} ''")
    _bad(capsys, ["sae", "eval", str(wide)], "no model is recorded with this SAE")


def test_without_model_the_recorded_one_must_still_be_there(capsys, sae_dir, tmp_path):
    import shutil

    copy = tmp_path / "sae"
    shutil.copytree(sae_dir, copy)
    record = json.loads((copy / "sae.json").read_text())
    gone = tmp_path / "moved-away"
    (copy / "sae.json").write_text(json.dumps({**record, "model": str(gone)}))
    err = _bad(capsys, ["sae", "analyze", str(copy)], "is not there any more: give --model")
    assert str(gone) in err
    (copy / "sae.json").write_text(json.dumps({k: v for k, v in record.items() if k != "model"}))
    _bad(capsys, ["sae", "eval", str(copy)], "no model is recorded with this SAE")
    _bad(capsys, ["sae", "eval", str(tmp_path / "nothing")], "no such SAE directory")


def test_train_then_eval_and_analyze(capsys, model_dir, tmp_path):
    out = tmp_path / "sae"
    flags = [f"--{k.replace('_', '-')}={v}" for k, v in SMALL_SAE.items()]
    assert main(["sae", "train", str(model_dir), "--out", str(out), "--quiet", *flags]) == 0
    printed = capsys.readouterr().out
    assert str(out) in printed and "patched" in printed
    record = json.loads((out / "sae.json").read_text())
    assert record["model"] == str(model_dir.resolve())
    assert main(["sae", "eval", str(out), "--model", str(model_dir), "--json", "-"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert main(["sae", "eval", str(out), "--json", "-"]) == 0  # the model recorded with it
    assert json.loads(capsys.readouterr().out) == result
    for key in ("patched_acc", "baseline_acc", "l0", "mse", "explained_variance", "dead", "d_sae"):
        assert result[key] == pytest.approx(record["metrics"][key]), key
    assert result["d_sae"] == SMALL_SAE["d_sae"]
    report = tmp_path / "a.json"
    assert main(["sae", "analyze", str(out), "--model", str(model_dir), "--factors", "0,3",
                 "--json", str(report)]) == 0
    assert "alignment:" in capsys.readouterr().out
    analysis = json.loads(report.read_text())
    assert set(analysis) >= {"metrics", "alignment", "attention", "swaps", "steering"}
    assert analysis["steering"]["factors"] == [0.0, 1.0, 3.0]


def test_a_device_not_on_this_machine_is_refused_before_any_work(capsys, model_dir, sae_dir,
                                                                  tmp_path):
    out = tmp_path / "never"
    absent = ["zzz", "cuda:99"] + ([] if torch.cuda.is_available() else ["cuda", "cuda:0"])
    for device in absent:
        _bad(capsys, ["sae", "train", str(model_dir), "--out", str(out), "--device", device],
             f"--device {device!r}: not on this machine")
        for command in ("eval", "analyze"):
            _bad(capsys, ["sae", command, str(sae_dir), "--device", device],
                 f"--device {device!r}: not on this machine")
    assert not out.exists()


@pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="needs /proc (no new files there)")
def test_an_unwritable_json_is_refused_before_any_work(capsys, model_dir, sae_dir, tmp_path):
    out = tmp_path / "never"
    unwritable = "/proc/x.json"
    _bad(capsys, ["sae", "train", str(model_dir), "--out", str(out), "--steps", "5",
                  "--json", unwritable], "--json /proc/x.json: cannot create files in /proc")
    _bad(capsys, ["sae", "train", str(model_dir), "--out", "/proc/sae", "--steps", "5"],
         "/proc/sae: cannot create files in /proc")
    for command in ("eval", "analyze"):
        _bad(capsys, ["sae", command, str(sae_dir), "--json", unwritable], "--json /proc/x.json")
    assert not out.exists()


@pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="needs /proc (no new files there)")
def test_a_json_write_that_fails_at_the_end_leaves_no_sae(capsys, monkeypatch, model_dir,
                                                           tmp_path):
    from listcopy.sae import cli

    monkeypatch.setattr(cli, "check_json_arg", lambda json_arg: None)  # let it reach the end
    out = tmp_path / "sae"
    err = _bad(capsys, ["sae", "train", str(model_dir), "--out", str(out), "--steps", "5",
                        "--batch-size", "64", "--quiet", "--json", "/proc/x.json"],
               "/proc/x.json")
    assert ".tmp" not in err  # the path given, not the temporary's
    assert not out.exists()


def test_the_summary_of_a_one_digit_task_says_what_does_not_apply():
    """list_len 1: no alpha varies and no two lists swap digits; the summary says so instead of
    printing None (numbers rounded)."""
    from listcopy.sae.analyze import format_summary

    metrics = {"l0": 46.2, "dead": 0, "d_sae": 100, "mse": 0.026, "explained_variance": 0.7,
               "baseline_acc": 0.0, "patched_acc": 0.0, "drop": 0.0,
               "per_position": {"o1": {"baseline_acc": 0.0, "patched_acc": 0.0}}}
    result = {"metrics": metrics, "steering": {"top_swap": {}}, "swaps": {"n_pairs": 0},
              "alignment": {"n_aligned": 5, "n_alive": 100, "threshold": 0.9,
                            "mean_best_cosine": 0.7564591, "directions_covered": 0.03},
              "attention": {"n_graded": 0, "n_binary": 0, "n_other": 100, "max_abs_corr": None,
                            "n_special": 0}}
    lines = format_summary(result).splitlines()
    assert "(mean best 0.756)" in lines[1] and "None" not in "\n".join(lines)
    assert lines[2].startswith("attention: does not apply") and lines[3].startswith("swaps: does not")


def test_metrics_that_do_not_exist_print_as_a_dash(tmp_path, capsys):
    """One validation list (5 one-digit lists, 80% to training): its rows do not vary, so the
    explained variance is NaN (null in the JSON); `sae train`, `eval` and `analyze` print '-'
    for it (it was a traceback from the line's format)."""
    from listcopy.config import Config
    from listcopy.sae.analyze import format_metrics
    from listcopy.training import train

    m = {"l0": 7.0, "dead": 9, "d_sae": 16, "mse": 0.05, "baseline_acc": 0.0, "patched_acc": 0.0,
         "drop": 0.0, "per_position": {"o1": {"baseline_acc": 0.0, "patched_acc": None}}}
    for missing in (None, float("nan")):
        line = format_metrics({**m, "explained_variance": missing})
        assert "explained variance -;" in line and "o1 0.000->-" in line
    config = Config().replace(task={"n_digits": 5, "list_len": 1},
                              model={"d_model": 8, "n_layers": 2},
                              train={"max_steps": 100, "device": "cpu"})
    assert config.task.n_val == 1
    train(config, tmp_path / "m", progress=False)
    sae = tmp_path / "sae"
    assert main(["sae", "train", str(tmp_path / "m"), "--out", str(sae), "--steps", "5",
                 "--batch-size", "8", "--d-sae", "8", "--k", "2", "--quiet"]) == 0
    assert main(["sae", "eval", str(sae)]) == 0
    assert main(["sae", "analyze", str(sae)]) == 0
    out = capsys.readouterr().out
    assert out.count("explained variance -;") == 3
