"""``listcopy bench``: every run reported, other sizes and devices, bad arguments refused."""

import io

import pytest
import torch

from tests.conftest import run_cli

from .helpers import DEVICES


def test_bench_reports_every_run():
    import json

    from listcopy.bench import run_bench

    buf = io.StringIO()
    result = run_bench(threads=1, steps=100, as_json=True, out=buf)
    assert json.loads(buf.getvalue()) == json.loads(json.dumps(result))
    assert [r["run"] for r in result["rows"]] == ["notebook loop", "engine E=1", "engine E=8",
                                                  "engine E=64"]
    assert result["rows"][0]["speedup"] == pytest.approx(1.0)
    assert all(r["ms_per_step"] > 0 for r in result["rows"])
    assert result["threads"] == 1 and result["cpu"] and result["torch"] == torch.__version__
    assert torch.get_num_threads() == 1  # restored (the autouse fixture set 1)
    assert result["device"] == "cpu" and "peak_gpu_mb" not in result["rows"][0]
    notebook, *engine = result["rows"]
    assert notebook["loop_seconds"] == notebook["seconds"]  # its loop is all it times
    for r in engine:  # the training loop alone: a part of the whole run, per model-step too
        assert 0 < r["loop_seconds"] < r["seconds"]
        assert r["loop_ms_per_model_step"] == pytest.approx(
            r["loop_seconds"] / 100 * 1e3 / r["members"])


@pytest.mark.parametrize("device", DEVICES)
def test_bench_on_a_device_with_other_sizes(device):
    from listcopy.bench import format_table, run_bench

    result = run_bench(steps=100, device=device, sizes=(3, 1), out=io.StringIO())
    assert [r["run"] for r in result["rows"]] == ["notebook loop", "engine E=1", "engine E=3"]
    assert result["device"].startswith(device)
    assert [r["members"] for r in result["rows"]] == [1, 1, 3]
    assert result["rows"][2]["ms_per_model_step"] == pytest.approx(result["rows"][2]["ms_per_step"] / 3)
    if device == "cuda":
        assert all(r["peak_gpu_mb"] > 0 for r in result["rows"]) and result["gpu"]
        assert "peak GPU MB" in format_table(result)


@pytest.mark.parametrize("args,problem", [
    (["--sizes", "8,x"], "--sizes"), (["--sizes", "0"], "--sizes"), (["--steps", "5"], "--steps"),
    (["--threads", "0"], "--threads"), (["--layers", "2"], "--layers")])
def test_bench_refuses_bad_arguments_in_one_line(args, problem):
    result = run_cli("bench", *args)
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.count("\n") == 1 and problem in result.stderr


def test_an_engine_run_reports_its_training_loop_apart_from_its_set_up():
    """engine_model_steps: every member's steps counted, and the loop's seconds (the runs' own
    wall_time_s: steps and evaluations) a part of the whole call's (members drawn, ensemble
    built, weights taken back)."""
    from listcopy.bench import engine_model_steps
    from listcopy.config import Config

    config = Config().override(["model.n_layers=1"])
    run = engine_model_steps(config, 200, 3)
    assert run.model_steps == 600
    assert 0 < run.loop_seconds < run.seconds
