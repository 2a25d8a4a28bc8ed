import json
import math

import numpy as np
import pytest
import torch

from listcopy.analysis.common import Metrics, hooked, mean_activation, to_json, val_metrics
from listcopy.metrics import evaluate

from .reference import no_hooks


def test_hooks_are_removed_even_when_one_raises(trained):
    model, config, data = trained

    def bad(x, hook):
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"), torch.no_grad():
        with hooked(model, [("blocks.1.hook_resid_pre", bad)]):
            model(data.val_inputs)
    assert no_hooks(model)


def test_val_metrics_are_the_packages_metrics(trained):
    model, config, data = trained
    m = val_metrics(model, data, batch_size=7)
    e = evaluate(model, data)
    assert m == Metrics(loss=pytest.approx(e["loss"], abs=1e-6), acc=e["acc"], seq_acc=e["seq_acc"],
                        n_val=e["n_val"], per_position_acc=tuple(e["per_position_acc"]))
    d = m.to_dict(base=Metrics(1.0, 0.5, 0.25, m.n_val))
    assert d["delta_acc"] == pytest.approx(m.acc - 0.5, abs=1e-6)


def test_mean_activation_does_not_depend_on_batches(trained):
    model, config, data = trained
    a = mean_activation(model, data, "blocks.1.hook_resid_pre", dims=(0, 1), batch_size=9)
    with torch.no_grad():
        _, cache = model.run_with_cache(data.val_inputs)
    assert torch.allclose(a, cache["resid_pre", 1].mean((0, 1)), atol=1e-6)


def test_to_json_has_no_nan_and_no_tensors():
    value = {"t": torch.tensor([1.0, float("nan")]), "b": torch.tensor([True]), 1: (np.float32(0.1),),
             "i": np.int64(3), "inf": math.inf}
    out = to_json(value)
    assert out == {"t": [1.0, None], "b": [True], "1": [0.1], "i": 3, "inf": None}
    json.dumps(out, allow_nan=False)


def test_every_analysis_refuses_bad_arguments_before_running(odd):
    """The common start of the analyses (checked_inputs): the model against the config, the batch
    size, the example row and the layer, each refused with a one-line ConfigError."""
    from listcopy.analysis import analyze
    from listcopy.analysis.attention import attention_patterns, sep_attention
    from listcopy.analysis.edges import edge_ablation
    from listcopy.analysis.lens import logit_lens
    from listcopy.analysis.probes import linear_probes
    from listcopy.config import ConfigError

    model, config, data = odd
    n_val = data.val_inputs.shape[0]
    calls = {
        f"example = {n_val}": [lambda: attention_patterns(model, config, data, example=n_val),
                               lambda: logit_lens(model, config, data, example=n_val),
                               lambda: analyze(model, config, data=data, example=n_val)],
        "example = -1": [lambda: logit_lens(model, config, data, example=-1)],
        "layer = 2": [lambda: sep_attention(model, config, data, layer=2)],
        "batch_size = 0": [lambda: edge_ablation(model, config, data, batch_size=0),
                           lambda: linear_probes(model, config, data, batch_size=0),
                           lambda: analyze(model, config, data=data, batch_size=0)],
        "does not match": [lambda: edge_ablation(model, config.override(["model.d_model=4"]), data)],
    }
    for message, fns in calls.items():
        for fn in fns:
            with pytest.raises(ConfigError, match=message) as err:
                fn()
            assert "\n" not in str(err.value)
    assert no_hooks(model)


def test_large_split_notice_suggests_val_rows_only_where_the_split_is_large():
    from listcopy.analysis.common import large_split_notice
    from listcopy.config import Config

    lists_of_3 = Config().override(["task.list_len=3"])
    assert lists_of_3.task.n_val == 200_000
    line = large_split_notice(lists_of_3, None)
    assert "all 200000 validation lists" in line and "--val-rows N" in line and "\n" not in line
    assert large_split_notice(lists_of_3, 20_000) is None
    assert large_split_notice(Config(), None) is None  # the seed's 2,000
    assert large_split_notice(Config(), None, limit=1_000) is not None
