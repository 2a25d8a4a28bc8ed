"""``listcopy bench --shapes`` (bench_shapes.py): its FLOP counts by hand, its flag sets, one small
run's rows consistent with each other, and bad arguments refused in one line. (Figures, never
timed assertions: benchmarks/README.md.)"""

import io

import pytest

from listcopy import bench_shapes
from listcopy.config import Config
from tests.conftest import run_cli


def test_all_flag_sets_are_the_32_combinations():
    sets = bench_shapes.all_flag_sets()
    assert len(sets) == 32 and sets["seed"] == {"ln": False, "use_bias": False, "freeze_wv": True,
                                                "freeze_wo": True, "n_heads": 1}
    assert sets["ln-bias-wv-wo-h2"] == {"ln": True, "use_bias": True, "freeze_wv": False,
                                        "freeze_wo": False, "n_heads": 2}
    assert len({tuple(sorted(v.items())) for v in sets.values()}) == 32


def test_the_notebook_flops_by_hand():
    """The default model: T = 5, D = 8, V = 101, 3 layers, batch 128: Q, K, V, O products, scores
    and pattern @ V, the unembedding; backward twice the forward."""
    config = Config()
    assert (config.task.seq_len, config.task.vocab, config.batch_size) == (5, 101, 128)
    layer = 4 * 2 * 5 * 8 * 8 + 2 * 2 * 5 * 5 * 8
    assert bench_shapes.notebook_flops_per_step(config) == 3 * (3 * layer + 2 * 5 * 8 * 101) * 128


def test_steps_for_is_a_multiple_of_the_evaluation_interval_within_bounds():
    assert bench_shapes.steps_for(1e12, 64, 100) == 100
    assert bench_shapes.steps_for(1.0, 1, 100) == 2000
    assert bench_shapes.steps_for(bench_shapes.WORK_FLOP / 750, 1, 100) == 700


def test_one_small_run_has_consistent_rows(monkeypatch):
    monkeypatch.setattr(bench_shapes, "WORK_FLOP", 1.0)  # 100 steps per run
    result = bench_shapes.run_shapes((8,), {"seed": {}}, (1, 2), n_layers=1, log=io.StringIO())
    (shape,) = result["shapes"]
    assert [r["run"] for r in shape["rows"]] == ["notebook loop", "engine E=1", "engine E=2"]
    assert all(r["steps"] == 100 for r in shape["rows"])
    assert result["sgemm_gflops"]["wall"] > 0 and result["threads"] >= 1
    for r in shape["rows"]:
        assert r["x_floor"] == pytest.approx(r["ms_per_model_step"] / r["floor_ms"])
        assert r["ms_per_model_step"] == pytest.approx(r["ms_per_step"] / r["members"])
    notebook, engine = shape["rows"][0], shape["rows"][1]
    assert notebook["speedup"] == pytest.approx(1.0)
    assert engine["mflop_per_model_step"] < notebook["mflop_per_model_step"]  # rows pruned
    table = bench_shapes.format_shapes(result)
    assert "sgemm" in table and table.count("engine E=") == 2


@pytest.mark.parametrize("args,problem", [
    (["--shapes", "8,0"], "--shapes"), (["--shapes", "1024"], "--shapes"),
    (["--all-flags"], "--all-flags"), (["--shapes", "8", "--layers", "0"], "--layers")])
def test_bad_shape_arguments_are_one_line(args, problem):
    result = run_cli("bench", *args)
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.count("\n") == 1 and problem in result.stderr
