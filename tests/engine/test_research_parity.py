"""The engine on the research line's variant (MASK token, layer-0 mask): the torch backend's
logits, losses and gradients equal the hooked model's, whose layer-0 rows of the outputs receive
nothing; the pruned plan computes nothing for those rows but their residual; the kernel (where a C
compiler is there) equally, through ``check_against_hooked``'s backends."""

import pytest
import torch

from listcopy.config import Config
from listcopy.engine import Ensemble
from listcopy.engine.rows import model_row_needs
from listcopy.model import ListCopyTransformer

from .helpers import DEVICES, FLAG_COMBOS, check_against_hooked, needs_kernel, state_dicts


def research(**model) -> Config:
    return Config().replace(task={"mask_token": True, "n_digits": 20},
                            model={"d_model": 8, "n_layers": 2, "layer0_mask": True, **model})


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("perturb", [False, True], ids=["init", "perturbed"])
@pytest.mark.parametrize("flags", FLAG_COMBOS, ids=lambda f: "-".join(map(str, f)))
def test_logits_and_gradients_equal_the_hooked_model_for_every_flag(flags, perturb, device):
    """Every combination of LayerNorm, bias, learned W_V / W_O and heads, at init and with every
    parameter perturbed (so that no fast path may assume identities or zero biases); one test
    each, so that their kernel builds spread over the test workers."""
    config = research(**dict(zip(("ln", "use_bias", "freeze_wv", "freeze_wo", "n_heads"), flags)))
    check_against_hooked(config, state_dicts(config, [0, 1], perturb), device=device)


@pytest.mark.parametrize("task, model", [
    ({"list_len": 1}, {"n_layers": 1}),
    ({"list_len": 3}, {"n_layers": 3, "n_heads": 2}),
    ({"list_len": 2, "mask_token": False}, {"n_layers": 2}),  # layer-0 mask alone
    ({"list_len": 2}, {"n_layers": 2, "layer0_mask": False}),  # MASK token alone
])
def test_other_lengths_depths_and_the_mixed_variants(task, model):
    config = research(**model).replace(task=task)
    check_against_hooked(config, state_dicts(config, [0, 1, 2], True), n=17)


def test_outputs_receive_nothing_in_layer_0():
    """The hooked model: pattern rows zero, attention output b_O; the engine's plan: those rows
    have no key, so no query, key or value is computed for them and they keep their residual."""
    config = research(use_bias=True)
    sd = state_dicts(config, [0], True)[0]
    model = ListCopyTransformer(config)
    model.load_state_dict(sd)
    tokens = torch.tensor([[3, 7, 21, 20, 20], [5, 5, 21, 20, 20]])
    _, cache = model.run_with_cache(tokens)
    assert (cache["pattern", 0][:, :, 3:] == 0).all() and (cache["pattern", 1][:, :, 3:].sum(-1) > 0.99).all()
    assert torch.equal(cache["blocks.0.hook_attn_out"][:, 3:],
                       sd["blocks.0.attn.b_O"].expand(2, 2, -1))
    needs = model_row_needs(2, 2, layer0_mask=True)
    assert needs.keys[0][3] == needs.keys[0][4] == ()
    assert needs.attending(0) == (2,) and needs.value_rows(0) == (0, 1)
    plan = Ensemble(config, [sd], backend="torch").forward.plan(frozenset({2, 3, 4}))
    first = plan.layers[0]
    assert first.silent == (0, 2) and 3 not in first.q_const + first.k_const + first.v_const


@needs_kernel
def test_the_kernel_takes_the_layer0_mask():
    """"auto" keeps the kernel for the whole variant; equal to the hooked model, also at d_model 64."""
    for d_model in (8, 64):
        config = research(d_model=d_model)
        sds = state_dicts(config, [0, 1], True, scale=0.1)
        assert Ensemble(config, sds).backend == "kernel"
        assert Ensemble(config, sds, backend="kernel").backend == "kernel"
        check_against_hooked(config, sds, n=21, rtol=1e-4 if d_model > 16 else 0.0)


@needs_kernel
def test_the_kernel_takes_the_mask_token_alone():
    """MASK at the outputs is only another token: the kernel trains it, equal to the hooked model."""
    config = research(layer0_mask=False)
    sds = state_dicts(config, [0, 1], False)
    assert Ensemble(config, sds).backend == "kernel"
    check_against_hooked(config, sds, n=21)
