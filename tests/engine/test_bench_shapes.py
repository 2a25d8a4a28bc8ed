"""``listcopy bench --shapes`` (bench_shapes.py): its FLOP counts by hand, its flag sets, one small
run's rows consistent with each other, and bad arguments refused in one line. (Figures, never
timed assertions: benchmarks/README.md.)"""

import io

import pytest

from listcopy import bench_shapes
from listcopy.config import Config
from listcopy.engine import Ensemble
from listcopy.engine.matmul_probe import load_probe
from listcopy.model import build_model
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
    and pattern @ V, the unembedding; backward twice the forward; the 2,000 validation lists'
    forward every 100 steps."""
    config = Config()
    assert (config.task.seq_len, config.task.vocab, config.batch_size) == (5, 101, 128)
    assert (config.task.n_val, config.train.eval_every) == (2000, 100)
    forward = 3 * (4 * 2 * 5 * 8 * 8 + 2 * 2 * 5 * 5 * 8) + 2 * 5 * 8 * 101
    assert bench_shapes.notebook_flops_per_step(config) == 3 * forward * 128 + 20 * forward
    sparse = config.override(["train.eval_every=1000"])
    assert bench_shapes.notebook_flops_per_step(sparse) == 3 * forward * 128 + 2 * forward


def test_the_engines_flops_are_the_kernels_step_and_its_share_of_the_evaluation():
    """d_model 32 (the kernel): a step of 128 sequences plus 2,000 sequences' forward pass (the
    kernel's pruned count, not the notebook's) every 100 steps."""
    config = bench_shapes.shape_config(32, bench_shapes.FLAG_SETS["seed"])
    shape = Ensemble(config, [build_model(config, hooks=False).state_dict()], "cpu").kernel_shape()
    flops, backend = bench_shapes.engine_flops_per_step(config)
    assert backend == "kernel"
    assert flops == shape.flops_per_step(128) + 20 * shape.flops_per_sequence()
    assert shape.flops_per_sequence() < bench_shapes.notebook_flops_per_step(config) / 128 / 3


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
        assert r["loop_x_floor"] == pytest.approx(r["loop_ms_per_model_step"] / r["floor_ms"])
        assert 0 < r["loop_ms_per_model_step"] < r["ms_per_model_step"]  # a part of the run
    notebook, engine = shape["rows"][0], shape["rows"][1]
    assert notebook["speedup"] == pytest.approx(1.0)
    assert engine["mflop_per_model_step"] < notebook["mflop_per_model_step"]  # rows pruned
    table = bench_shapes.format_shapes(result)
    assert "sgemm" in table and table.count("engine E=") == 2 and "loop x" in table


def test_the_floor_is_at_the_fastest_matrix_product_measurement():
    row = {"mflop_per_model_step": 100.0, "ms_per_model_step": 4.0, "cpu_ms_per_model_step": 3.0,
           "floor_ms": 2.0, "x_floor": 2.0, "cpu_x_floor": 1.5}
    result = {"sgemm_gflops": {"wall": 50.0, "cpu": 60.0}, "n_layers": 3, "repeat": 1,
              "sgemm_gflops_after": {"wall": 70.0, "cpu": 40.0},
              "compiled_gflops": {"wall": 90.0, "cpu": 30.0},
              "compiled_gflops_after": {"wall": 100.0, "cpu": 20.0}, "shapes": [{"rows": [row]}]}
    out = bench_shapes.with_best_floor(result)
    assert out["floor_gflops"] == {"wall": 100.0, "cpu": 60.0}
    assert row["floor_ms"] == pytest.approx(1.0)  # 0.1 GFLOP at 100 GFLOP/s
    assert row["x_floor"] == pytest.approx(4.0) and row["cpu_x_floor"] == pytest.approx(1.8)


def test_the_compiled_probe_counts_its_products_on_each_thread():
    probe = load_probe()
    assert probe is not None  # the suite runs where the kernel builds
    one = 2.0 * 192 * 256 * 256  # one 192 x 256 x 256 product
    assert probe(1, 3) == 3 * one and probe(2, 2) == 4 * one and probe(1, 0) == 0.0
    rate = bench_shapes.compiled_rate(probe, seconds=0.05)
    assert rate["wall"] > 1e8 and rate["cpu"] > 1e8
    assert bench_shapes.compiled_rate(None) == {"wall": 0.0, "cpu": 0.0}


def test_without_a_compiler_there_is_no_probe_and_the_floor_is_sgemm(monkeypatch, caplog):
    monkeypatch.setenv("CC", "no-such-compiler-xyz")
    assert load_probe() is None
    assert "no compiled matrix-product probe" in caplog.text
    monkeypatch.setattr(bench_shapes, "sgemm_rate", lambda: {"wall": 5e10, "cpu": 6e10})
    assert bench_shapes.floor_rate() == pytest.approx(5e10)


def test_repeats_are_interleaved_and_each_row_is_its_fastest(monkeypatch):
    monkeypatch.setattr(bench_shapes, "WORK_FLOP", 1.0)  # 100 steps per run
    log = io.StringIO()
    result = bench_shapes.run_shapes((8,), {"seed": {}}, (1, 2), n_layers=1, log=log, repeat=3)
    runs = [line.split(": ")[0].split(" ", 1)[1] for line in log.getvalue().splitlines()]
    assert runs == ["notebook loop", "engine E=1", "engine E=2"] * 3  # round-robin, not 3 in a row
    assert result["repeat"] == 3
    for r in result["shapes"][0]["rows"]:
        assert len(r["walls_s"]) == 3
        fastest = min(r["walls_s"]) / r["steps"] / r["members"] * 1e3
        assert r["ms_per_model_step"] == pytest.approx(fastest)
    assert "the fastest of 3" in bench_shapes.format_shapes(result)


def test_flags_picks_the_flag_sets_in_the_order_given():
    assert list(bench_shapes.chosen_flag_sets(None)) == list(bench_shapes.FLAG_SETS)
    assert bench_shapes.chosen_flag_sets("all, seed") == {
        "all": bench_shapes.FLAG_SETS["all"], "seed": {}}
    every = bench_shapes.chosen_flag_sets("ln-bias-wv,seed", every=True)
    assert every == {n: bench_shapes.all_flag_sets()[n] for n in ("ln-bias-wv", "seed")}
    with pytest.raises(KeyError, match="'nope'"):
        bench_shapes.chosen_flag_sets("seed,nope")
    with pytest.raises(KeyError, match="'ln-bias'"):
        bench_shapes.chosen_flag_sets("ln-bias")  # a name of --all-flags only


@pytest.mark.parametrize("args,problem", [
    (["--shapes", "8,0"], "--shapes"), (["--shapes", "1024"], "--shapes"),
    (["--all-flags"], "--all-flags"), (["--shapes", "8", "--layers", "0"], "--layers"),
    (["--shapes", "8", "--flags", "ln_bias,nope"], "nope"), (["--repeat", "2"], "--repeat"),
    (["--shapes", "8", "--repeat", "0"], "--repeat"),
    (["--shapes", "8", "--flags", "ln-bias"], "ln-bias")])
def test_bad_shape_arguments_are_one_line(args, problem):
    result = run_cli("bench", *args)
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.count("\n") == 1 and problem in result.stderr
