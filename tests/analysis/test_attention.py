import torch

from listcopy.analysis.attention import attention_patterns, mean_patterns, sep_attention
from listcopy.task import token_labels

from .reference import allowed, no_hooks


def _cache_patterns(model, inputs):
    _, cache = model.run_with_cache(inputs)
    return torch.stack([cache["pattern", l] for l in range(model.cfg.n_layers)], 1)  # (N, nl, H, T, T)


def test_attention_matches_the_seeds_cells(trained):
    model, config, data = trained
    res = attention_patterns(model, config, data, example=3, batch_size=37)  # batches must not matter
    with torch.no_grad():
        pats = _cache_patterns(model, data.val_inputs)
    L = config.task.list_len
    assert torch.allclose(res.mean, pats.mean(0), atol=1e-6)
    assert torch.allclose(res.example, pats[3], atol=1e-6)
    leak = pats[:, :, :, L + 1:, :L].sum(-1).amax(dim=(0, 2, 3))
    assert res.max_leak == tuple(float(x) for x in leak)
    assert res.leak_ok and max(res.max_leak) == 0.0  # the mask is built in
    for l in range(config.model.n_layers):
        p = pats[:, l]
        assert res.patterns_constant[l] == torch.allclose(p, p[0].expand_as(p))
        assert abs(res.max_deviation[l] - float((p - p[0]).abs().max())) < 1e-6
    assert res.labels == tuple(token_labels(L))
    assert res.example_tokens == tuple(data.val_inputs[3].tolist())
    assert torch.allclose(mean_patterns(model, config, data), res.mean, atol=1e-6)
    assert no_hooks(model)


def test_patterns_obey_the_mask_and_rows_sum_to_one(odd):
    model, config, data = odd
    res = attention_patterns(model, config, data)
    assert res.mean.shape == (2, 2, 7, 7)
    ok = allowed(3)
    assert (res.mean[..., ~ok] == 0).all()
    assert torch.allclose(res.mean.sum(-1), torch.ones(2, 2, 7))
    assert res.patterns_constant == (False, False)
    d = res.to_dict()
    assert len(d["example"]) == 2 and len(d["example"][0]) == 2 and len(d["example"][0][0]) == 7


def test_constant_patterns_are_detected(constant_patterns):
    model, config, data = constant_patterns
    res = attention_patterns(model, config, data)
    assert res.patterns_constant == (True,) * config.model.n_layers
    ok = allowed(config.task.list_len).float()
    uniform = ok / ok.sum(-1, keepdim=True)
    assert torch.allclose(res.mean[:, 0], uniform.expand(config.model.n_layers, -1, -1), atol=1e-6)


def test_sep_attention_matches_the_cache(trained):
    model, config, data = trained
    res = sep_attention(model, config, data, batch_size=50)
    L = config.task.list_len
    with torch.no_grad():
        logits, cache = model.run_with_cache(data.val_inputs)
    assert torch.allclose(res.scores, cache["attn_scores", 0][:, :, L, :L], atol=1e-5)
    assert torch.allclose(res.pattern, cache["pattern", 0][:, :, L, :L], atol=1e-6)
    out = config.task.output_slice
    right = logits[:, out].argmax(-1) == data.val_targets[:, out]
    assert torch.equal(res.token_correct, right) and torch.equal(res.correct, right.all(-1))
    assert torch.equal(res.digits, data.val_inputs[:, :L])
    assert res.keys == ("d1", "d2")
    d = res.to_dict()
    assert len(d["scores"]) == data.val_inputs.shape[0] and d["correct"][0] in (True, False)
    assert no_hooks(model)
