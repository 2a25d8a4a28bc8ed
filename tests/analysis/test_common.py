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
                        n_val=e["n_val"])
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
