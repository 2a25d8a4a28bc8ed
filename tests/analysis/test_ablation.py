import pytest
import torch

from listcopy.analysis.ablation import (mean_attention_ablation, pos_ablation, skip_ablation,
                                        skip_hooks)
from listcopy.analysis.common import resid_stages, val_metrics

from . import reference as ref


def _close(m, r, tol=1e-4):
    assert m.loss == pytest.approx(r["loss"], abs=tol)
    assert m.acc == pytest.approx(r["acc"], abs=tol)
    assert m.seq_acc == pytest.approx(r["seq_acc"], abs=tol)


def test_zero_skip_at_every_layer_is_a_forward_without_residual_connections(trained):
    model, config, data = trained
    res = skip_ablation(model, config, data)
    n = config.model.n_layers
    logits = ref.forward(model, data.val_inputs, skip=(False,) * n)
    _close(res.zero["all"], ref.metrics(logits, data.val_targets, config.task.list_len))
    for l in range(n):
        skip = tuple(i != l for i in range(n))
        logits = ref.forward(model, data.val_inputs, skip=skip)
        _close(res.zero[str(l)], ref.metrics(logits, data.val_targets, config.task.list_len))
    assert ref.no_hooks(model)


def test_mean_skip_matches_a_whole_batch_forward(trained):
    model, config, data = trained
    res = skip_ablation(model, config, data, batch_size=64)  # means are over the whole set anyway
    n, L = config.model.n_layers, config.task.list_len
    logits = ref.forward(model, data.val_inputs, skip=(False,) * n, skip_mean=(True,) * n)
    _close(res.mean["all"], ref.metrics(logits, data.val_targets, L))
    for l in range(n):
        skip = tuple(i != l for i in range(n))
        logits = ref.forward(model, data.val_inputs, skip=skip, skip_mean=(True,) * n)
        _close(res.mean[str(l)], ref.metrics(logits, data.val_targets, L))
    assert set(res.to_dict()["zero"]) == {"0", "1", "2", "all"}


def test_mean_skip_by_hand_with_transformer_lens_hooks(trained):
    model, config, data = trained
    cache = {}

    def pre(x, hook):
        cache["pre"] = x

    def post(x, hook):
        return x - cache["pre"] + cache["pre"].mean((0, 1))

    with torch.no_grad():
        logits = model.run_with_hooks(data.val_inputs, fwd_hooks=[
            ("blocks.1.hook_resid_pre", pre), ("blocks.1.hook_resid_post", post)])
    res = skip_ablation(model, config, data)
    _close(res.mean["1"], ref.metrics(logits, data.val_targets, config.task.list_len))


def test_skip_hooks_leave_other_layers_alone(odd):
    model, config, data = odd
    with torch.no_grad(), model.hooks(fwd_hooks=skip_hooks(1)):
        got = model(data.val_inputs)
    want = ref.forward(model, data.val_inputs, skip=(True, False))
    assert torch.allclose(got, want, atol=1e-5)
    assert ref.no_hooks(model)


def test_pos_ablation_matches_hand_hooks_and_the_reference(trained):
    model, config, data = trained
    res = pos_ablation(model, config, data)
    L, n = config.task.list_len, config.model.n_layers
    assert list(res.by_hook) == resid_stages(n)
    W_pos = model.W_pos.detach()

    def hook(x, hook):
        keep = torch.ones(x.shape[1], 1)
        keep[L] = 0
        return x - W_pos * keep

    for name, m in res.by_hook.items():
        with torch.no_grad():
            logits = model.run_with_hooks(data.val_inputs, fwd_hooks=[(name, hook)])
        _close(m, ref.metrics(logits, data.val_targets, L))

    def edit(where, x):  # the embedding without W_pos, except at SEP
        if where != "pre0":
            return x
        x = x.clone()
        x[:, [i for i in range(x.shape[1]) if i != L]] -= W_pos[[i for i in range(x.shape[1]) if i != L]]
        return x

    logits = ref.forward(model, data.val_inputs, resid_edit=edit)
    _close(res.by_hook["blocks.0.hook_resid_pre"], ref.metrics(logits, data.val_targets, L))
    d = res.to_dict()
    assert set(d) == set(resid_stages(n))
    assert {"loss", "acc", "seq_acc", "delta_acc"} <= set(d["blocks.0.hook_resid_pre"])
    assert ref.no_hooks(model)


def test_mean_attention_changes_nothing_when_patterns_do_not_depend_on_the_input(constant_patterns):
    model, config, data = constant_patterns
    res = mean_attention_ablation(model, config, data)
    assert res.ablated.acc == res.base.acc and res.ablated.seq_acc == res.base.seq_acc
    assert res.ablated.loss == pytest.approx(res.base.loss, abs=1e-6)
    assert res.base == val_metrics(model, data)


def test_mean_attention_matches_the_seeds_cell(trained):
    model, config, data = trained
    res = mean_attention_ablation(model, config, data)
    with torch.no_grad():
        _, cache = model.run_with_cache(data.val_inputs)
        avg = [cache["pattern", l][:, 0].mean(0) for l in range(config.model.n_layers)]

        def mk_hook(avg):  # the seed's cell, verbatim in spirit
            logits = (avg + 1e-12).log()
            return lambda scores, hook: logits.unsqueeze(0).unsqueeze(0).expand_as(scores)

        logits = model.run_with_hooks(data.val_inputs, fwd_hooks=[
            (f"blocks.{l}.attn.hook_attn_scores", mk_hook(avg[l])) for l in range(len(avg))])
    _close(res.ablated, ref.metrics(logits, data.val_targets, config.task.list_len))
    # and the same as running with the mean patterns put in place by hand
    edited = ref.forward(model, data.val_inputs,
                         pattern_edit=lambda l, p: (avg[l] + 1e-12).log().softmax(-1).expand_as(p))
    _close(res.ablated, ref.metrics(edited, data.val_targets, config.task.list_len))
    assert ref.no_hooks(model)


def test_multi_head_mean_attention_uses_each_heads_mean(odd):
    model, config, data = odd
    res = mean_attention_ablation(model, config, data)
    assert res.means.shape == (2, 2, 7, 7)
    edited = ref.forward(model, data.val_inputs,
                         pattern_edit=lambda l, p: (res.means[l] + 1e-12).log().softmax(-1).expand_as(p))
    _close(res.ablated, ref.metrics(edited, data.val_targets, config.task.list_len), tol=1e-5)
