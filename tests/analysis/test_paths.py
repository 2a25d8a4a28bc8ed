"""Logits as a sum over attention paths: against an explicit enumeration of every path, on models
with known patterns; the one-line refusals where the maths does not hold."""

import itertools

import pytest
import torch

from listcopy import Config
from listcopy.analysis.paths import (NotApplicable, linear_refusal, logit_reconstruction,
                                     path_coefficients, rebuild_logits)
from listcopy.model import build_model
from listcopy.task import dataset

from .reference import forward


def captured_patterns(model, tokens):
    """Patterns of the hand-written forward (no hooks), (n_layers, B, H, T, T)."""
    seen = []

    def keep(layer, pattern):
        seen.append(pattern.clone())
        return pattern

    forward(model, tokens, pattern_edit=keep)
    return torch.stack(seen)


def path_sum_logits(model, tokens, patterns):
    """Every path written out: positions p_0 -> p_1 -> ... -> p_n = t, one step per layer, each
    step weighted by (1 if it stays) + the summed heads' pattern weight; the logits at t are the
    sum over paths of the product of the weights times (W_E[token_p0] + W_pos[p0]), times W_U."""
    B, T = tokens.shape
    n_layers = patterns.shape[0]
    A = patterns.double().sum(2)  # (n_layers, B, T, T)
    W_E, W_pos, W_U = (w.detach().double() for w in (model.W_E, model.W_pos, model.W_U))
    out = torch.zeros(B, T, W_U.shape[1], dtype=torch.float64)
    for b in range(B):
        for t in range(T):
            resid = torch.zeros(W_E.shape[1], dtype=torch.float64)
            for path in itertools.product(range(T), repeat=n_layers):
                pos = list(path) + [t]
                weight = 1.0
                for layer in range(n_layers):
                    q, k = pos[layer + 1], pos[layer]
                    weight *= float(q == k) + float(A[layer, b, q, k])
                if weight:
                    resid += weight * (W_E[tokens[b, pos[0]]] + W_pos[pos[0]])
            out[b, t] = resid @ W_U
    return out


@pytest.mark.parametrize("overrides", [
    ["task.n_digits=7", "model.n_layers=2", "model.d_model=8"],
    ["task.n_digits=5", "task.list_len=3", "model.n_layers=3", "model.d_model=6"],
])
def test_rebuilt_logits_equal_an_explicit_path_sum_and_the_model(overrides):
    config = Config().override(overrides)
    model = build_model(config, torch.Generator().manual_seed(4)).eval()
    tokens = dataset(config).val_inputs[:3]
    patterns = captured_patterns(model, tokens)
    loops = path_sum_logits(model, tokens, patterns)
    rebuilt = rebuild_logits(model, tokens, patterns)
    assert torch.allclose(rebuilt, loops, atol=1e-9)
    with torch.no_grad():
        assert torch.allclose(rebuilt.float(), model(tokens), atol=1e-4)


def test_path_coefficients_of_known_patterns():
    """Two layers, three positions: C = (I + A1)(I + A0), entry by entry as the paths give it."""
    A0 = torch.tensor([[1.0, 0, 0], [0.3, 0, 0], [0.6, 0.4, 0]])
    A1 = torch.tensor([[1.0, 0, 0], [0.5, 0, 0], [0.1, 0.9, 0]])
    C = path_coefficients(torch.stack([A0, A1])[:, None, None])[0]
    # position 2 <- position 0: stay then A1[2,0]... every path: (0->0->2): (1+1)*0.1; (0->1->2):
    # 0.3*0.9; (0->2->2): 0.6*1
    assert C[2, 0].item() == pytest.approx(2 * 0.1 + 0.3 * 0.9 + 0.6)
    assert C[2, 1].item() == pytest.approx(0.9 + 0.4)
    assert C[2, 2].item() == pytest.approx(1.0)
    assert C[1, 0].item() == pytest.approx(2 * 0.5 + 0.3)


def test_reconstruction_of_a_trained_model(trained):
    model, config, data = trained
    r = logit_reconstruction(model, config, data).to_dict()
    assert r["labels"] == ["o1", "o2"]
    assert max(r["mean_l2"]) < 1e-4 and r["max_abs"] < 1e-4
    assert r["acc"] == r["model_acc"] >= 0.999
    assert r["n_val"] == data.val_inputs.shape[0]


@pytest.mark.parametrize("overrides, words", [
    (["model.ln=true"], "LayerNorm"),
    (["model.freeze_wv=false"], "learned W_V / W_O"),
    (["model.n_heads=2"], "d_head slice"),
])
def test_refused_where_the_logits_are_not_a_path_sum(overrides, words):
    config = Config().override(["task.n_digits=5", "model.d_model=8", *overrides])
    model = build_model(config, torch.Generator().manual_seed(0))
    why = linear_refusal(model)
    assert why is not None and words in why and "\n" not in why
    with pytest.raises(NotApplicable, match=words):
        logit_reconstruction(model, config)


def test_a_non_zero_bias_is_refused():
    config = Config().override(["task.n_digits=5", "model.d_model=8", "model.use_bias=true"])
    model = build_model(config, torch.Generator().manual_seed(0))
    assert linear_refusal(model) is None  # zero-initialised biases: still a path sum
    with torch.no_grad():
        model.blocks[0].attn.b_O.add_(0.1)
    assert "blocks.0.attn.b_O" in linear_refusal(model)
