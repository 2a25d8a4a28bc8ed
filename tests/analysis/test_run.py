import json

import pytest
import torch

from listcopy.analysis import ANALYSES, analyze, format_summary
from listcopy.analysis.run import parse_only
from listcopy.config import ConfigError

from .reference import no_hooks


def _metric_objects(result):
    yield result["metrics"]
    yield result["mean_attention"]
    yield from result["pos_ablation"].values()
    for kind in ("zero", "mean"):
        yield from result["skip_ablation"][kind].values()
    yield result["edges"]["combined"]
    yield from result["edges"]["edges"]


def test_analyze_any_shape_gives_the_contracted_json(odd):
    model, config, data = odd
    before = {k: v.clone() for k, v in model.state_dict().items()}
    model.train()
    result = analyze(model, config, umap=False)
    assert model.training  # mode restored
    assert no_hooks(model)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    text = json.dumps(result, allow_nan=False)
    again = json.loads(text)
    assert set(again) == {"name", "config", "metrics", "per_position_acc", *ANALYSES}
    assert len(again["attention"]["max_leak"]) == 2 and len(again["attention"]["patterns_constant"]) == 2
    assert set(again["pos_ablation"]) == {"blocks.0.hook_resid_pre", "blocks.0.hook_resid_post",
                                          "blocks.1.hook_resid_post"}
    assert set(again["skip_ablation"]["zero"]) == set(again["skip_ablation"]["mean"]) == {"0", "1", "all"}
    for m in _metric_objects(again):
        assert {"loss", "acc", "seq_acc"} <= set(m)
    assert [r["target"] for r in again["probes"]["rows"][:3]] == ["d1", "d2", "d3"]
    assert len(again["sep_attention"]["scores"][0]) == 2  # heads
    summary = format_summary(result)
    assert "edges:" in summary and "UMAP: skipped" in summary


def test_analyze_is_deterministic_and_only_runs_what_is_asked(trained):
    model, config, data = trained
    seen = []
    a = analyze(model, config, only="edges,probes", progress=lambda n, s: seen.append(n), data=data)
    b = analyze(model, config, only=["probes", "edges"], data=data)
    assert a == b
    assert set(a) == {"name", "config", "metrics", "per_position_acc", "edges", "probes"}
    assert seen == ["metrics", "edges", "probes"]
    assert set(analyze(model, config, only="metrics", data=data)) == {"name", "config", "metrics",
                                                                     "per_position_acc"}


def test_val_rows_analyses_the_first_validation_lists_as_a_cut_dataset_does(trained):
    """val_rows=N is the analysis of the split cut by hand to its first N validation lists."""
    from listcopy.task import Dataset

    model, config, data = trained
    n_train = config.task.n_train
    cut = Dataset(data.task, data.inputs[:n_train + 50], data.targets[:n_train + 50])
    only = "metrics,errors,pos_ablation,edges,probes"
    a = analyze(model, config, only=only, data=data, val_rows=50)
    assert a == analyze(model, config, only=only, data=cut)
    assert a["metrics"]["n_val"] == 50
    assert a != analyze(model, config, only=only, data=data)  # the whole split differs
    assert analyze(model, config, only="metrics", data=data, val_rows=10 ** 9) == \
        analyze(model, config, only="metrics", data=data)  # more than there are: all of them
    assert data.first_val(None) is data and data.first_val(50).train_inputs.equal(data.train_inputs)
    with pytest.raises(ConfigError, match="example = 50"):
        analyze(model, config, only="attention", data=data, val_rows=50, example=50)
    for bad in (0, -3, 2.5, True):
        with pytest.raises(ConfigError, match=f"val_rows = {bad!r}: must be an integer >= 1"):
            analyze(model, config, only="metrics", data=data, val_rows=bad)


def test_bad_requests_are_one_line_errors(trained):
    model, config, data = trained
    with pytest.raises(ConfigError, match="unknown analysis 'edge'"):
        analyze(model, config, only="attention,edge", data=data)
    with pytest.raises(ConfigError, match="example = 80"):
        analyze(model, config, only="attention", example=80, data=data)
    other = config.override(["model.d_model=8"])
    with pytest.raises(ConfigError, match="does not match"):
        analyze(model, other, only="attention", data=data)
    assert parse_only(None) == ANALYSES


@pytest.mark.slow
def test_whole_analysis_of_the_default_seed_model(seed_model):
    """Everything, UMAP included, on the seed's own 1,000-step checkpoint (3layer_100dig_8d)."""
    import time

    from listcopy.analysis.geometry import embedding_geometry

    model, config, data = seed_model
    t0 = time.process_time()  # this process's CPU time: other processes' load does not count
    result = analyze(model, config, data=data)
    elapsed = time.process_time() - t0
    assert elapsed < 120  # about 20-25 s on one busy core; most of it UMAP's first-call JIT
    assert result["metrics"]["acc"] == pytest.approx(0.75775, abs=1e-6)  # the seed's number
    json.dumps(result, allow_nan=False)
    umap = result["geometry"]["umap"]
    assert len(umap["W_E"]["2d"]) == 100 and len(umap["W_U"]["3d"][0]) == 3
    again = embedding_geometry(model, config).to_dict()
    assert again["umap"] == umap  # seeded: the same coordinates every time
    assert result["attention"]["leak_ok"] and result["attention"]["patterns_constant"] == [False] * 3
    assert no_hooks(model)
