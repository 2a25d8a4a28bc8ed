import pytest
import torch

from listcopy.analysis.edges import allowed_edges, edge_ablation, edge_hooks

from . import reference as ref


def test_allowed_edges_follow_the_mask():
    for L in (1, 2, 3):
        ok = ref.allowed(L)
        assert allowed_edges(L) == [(q, k) for q in range(2 * L + 1) for k in range(2 * L + 1) if ok[q, k]]
    assert allowed_edges(2) == [(0, 0), (1, 0), (2, 0), (2, 1), (3, 2), (4, 2), (4, 3)]


@pytest.mark.parametrize("edge", [(0, 2, 0), (1, 4, 3), (2, 0, 0)])
def test_zeroing_an_edge_is_the_forward_with_that_entry_zero(trained, edge):
    model, config, data = trained
    layer, q, k = edge

    def zero(l, p):
        if l == layer:
            p = p.clone()
            p[:, :, q, k] = 0.0  # no renormalisation
        return p

    want = ref.forward(model, data.val_inputs, pattern_edit=zero)
    with torch.no_grad(), model.hooks(fwd_hooks=edge_hooks([edge])):
        got = model(data.val_inputs)
    assert torch.allclose(got, want, atol=1e-4)
    assert ref.no_hooks(model)


def test_edge_ablation_numbers(trained):
    model, config, data = trained
    res = edge_ablation(model, config, data, tolerance=0.01)
    assert len(res.edges) == 3 * 7
    L = config.task.list_len
    for e in res.edges[::4]:  # every fourth edge, by hand with TransformerLens hooks
        def hook(p, hook, q=e.query, k=e.key):
            p = p.clone()
            p[:, :, q, k] = 0
            return p
        with torch.no_grad():
            logits = model.run_with_hooks(data.val_inputs, fwd_hooks=[
                (f"blocks.{e.layer}.attn.hook_pattern", hook)])
        r = ref.metrics(logits, data.val_targets, L)
        assert e.metrics.acc == pytest.approx(r["acc"], abs=1e-6)
        assert e.metrics.loss == pytest.approx(r["loss"], abs=1e-4)
    removable = {(e.layer, e.query, e.key) for e in res.edges if abs(e.metrics.acc - res.base.acc) < 0.01}
    assert {(e.layer, e.query, e.key) for e in res.removable} == removable
    assert 0 < len(removable) < 21  # a trained model needs some edges and not others
    critical = {(e.layer, e.query, e.key) for e in res.edges} - removable
    assert any(l == 0 and q == L for l, q, _ in critical)  # SEP must read the digits at layer 0
    with torch.no_grad():
        logits = ref.forward(model, data.val_inputs, pattern_edit=lambda l, p: p * torch.tensor(
            [[0.0 if (l, q, k) in removable else 1.0 for k in range(5)] for q in range(5)]))
    assert res.combined.acc == pytest.approx(ref.metrics(logits, data.val_targets, L)["acc"], abs=1e-6)
    d = res.to_dict()
    assert d["removable"] == [[e.layer, e.query, e.key] for e in res.removable]
    assert {"layer", "query", "key", "label", "acc", "delta_acc", "loss", "seq_acc"} <= set(d["edges"][0])
    assert d["edges"][2]["label"] == "SEP<-d1"
    assert ref.no_hooks(model)


def test_bad_tolerance_is_one_line_error(trained):
    from listcopy.config import ConfigError

    model, config, data = trained
    with pytest.raises(ConfigError, match="tolerance"):
        edge_ablation(model, config, data, tolerance=-1)
