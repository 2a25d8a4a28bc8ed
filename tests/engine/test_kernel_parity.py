"""The compiled kernel against the hooked model at every flag combination (LayerNorm x biases x
learned W_V x learned W_O x 1 or 2 heads x the research variant's layer-0 mask), narrow and wide,
in the variant choice.py picks for the width and in the other; its training options (a learning
rate per step, gradient clipping) against torch's own AdamW and ``clip_grad_norm_`` on the hooked
model.

The layer-0 mask is the research variant's ``model.layer0_mask`` (the outputs' pattern rows zero in
layer 0, held to the research line's own model by tests/engine/test_research_parity.py and
tests/test_research_export.py); the kernel gets the rows each layer then needs (rows.py).
"""

import dataclasses

import pytest
import torch
import torch.nn.functional as F

from listcopy.config import Config
from listcopy.engine import Ensemble, choice
from listcopy.model import ListCopyTransformer
from listcopy.task import dataset

from .helpers import (FLAG_COMBOS, check_kernel_against_hooked, kernel_ensemble, needs_kernel,
                      small, state_dicts)

pytestmark = needs_kernel


# d_model 128 with the layer-0 mask: the flag sets at both ends (none added or learned, all of
# them), one and two heads. The mask changes which rows each layer needs, not the flags' code,
# which d_model 8 crosses with it in full; each case is a kernel build of its own.
WIDE_LAYER0 = [c for c in FLAG_COMBOS if c[0] == c[1] != c[2] == c[3]]
CASES = ([(8, layer0, *c) for layer0 in (False, True) for c in FLAG_COMBOS]
         + [(128, False, *c) for c in FLAG_COMBOS] + [(128, True, *c) for c in WIDE_LAYER0])


@pytest.mark.parametrize("d_model,layer0,ln,use_bias,freeze_wv,freeze_wo,n_heads", CASES)
def test_kernel_equals_the_hooked_model_at_every_flag_combination(ln, use_bias, freeze_wv,
                                                                  freeze_wo, n_heads, layer0,
                                                                  d_model):
    """Every parameter perturbed (frozen identities and zero biases too: the kernel then reads
    them from its ``fixed`` buffer), mildly at d_model 128 where float32 rounding grows; every
    flag combination at d_model 8 with either mask and at 128 with the seed's."""
    config = small(d_model=d_model, ln=ln, use_bias=use_bias, freeze_wv=freeze_wv,
                   freeze_wo=freeze_wo, n_heads=n_heads, layer0_mask=layer0)
    assert choice.pick(config).dw_lanes == (d_model <= 16)
    sds = state_dicts(config, [0, 1], True, scale=0.05 if d_model > 16 else 0.3)
    check_kernel_against_hooked(config, sds, rtol=1e-4 if d_model > 16 else 0.0, arbitrary=0)


@pytest.mark.parametrize("overrides", [
    dict(model={"d_model": 8}),
    dict(model={"d_model": 64, "n_heads": 4, "ln": True, "use_bias": True, "freeze_wv": False}),
    dict(task={"list_len": 3, "n_digits": 10},
         model={"d_model": 24, "n_heads": 2, "n_layers": 3, "freeze_wo": False}),
])
@pytest.mark.parametrize("dw_lanes", [True, False], ids=["lanes", "rows"])
@pytest.mark.parametrize("layer0", [False, True], ids=["seed_mask", "layer0_mask"])
@pytest.mark.parametrize("arbitrary", [0, 4], ids=["task_rows", "arbitrary_rows"])
def test_both_kernel_variants_equal_the_hooked_model(overrides, dw_lanes, layer0, arbitrary):
    """Either way of summing weight gradients, at widths that are not multiples of the lanes'
    blocks, other list lengths and depths; on the task's rows alone (the constant rows once per
    step) and with arbitrary rows among them (no row constant)."""
    model = {**overrides.get("model", {}), "layer0_mask": layer0}
    config = Config().replace(**{**overrides, "model": model})
    sds = state_dicts(config, [0, 1, 2], True, scale=0.1)
    check_kernel_against_hooked(config, sds, n=21, rtol=1e-4, dw_lanes=dw_lanes,
                                arbitrary=arbitrary)


@pytest.mark.parametrize("lanes", [8, 16])
@pytest.mark.parametrize("d_model,n_heads", [(8, 1), (24, 2), (40, 1), (64, 4)])
def test_either_lane_width_equals_the_hooked_model(lanes, d_model, n_heads):
    """8 lanes (AVX2) and 16 (AVX-512), whichever this CPU has, with the weight gradients by
    transposed rows: widths below, between and at multiples of the lanes and of the product
    blocks (the vocabulary's 101 columns end in a partial vector)."""
    config = Config().replace(model={"d_model": d_model, "n_heads": n_heads, "ln": True,
                                     "use_bias": True, "freeze_wv": False})
    sds = state_dicts(config, [0, 1], True, scale=0.1)
    check_kernel_against_hooked(config, sds, n=21, rtol=1e-4, dw_lanes=False, lanes=lanes,
                                arbitrary=0)


@pytest.mark.parametrize("dw_lanes", [True, False], ids=["lanes", "rows"])
@pytest.mark.parametrize("fold_vo", [True, False], ids=["folded", "unfolded"])
@pytest.mark.parametrize("freeze_wv,freeze_wo,use_bias", [(False, False, True), (False, True, False),
                                                          (True, False, True)])
def test_one_head_with_w_v_and_w_o_folded_or_not_equals_the_hooked_model(freeze_wv, freeze_wo,
                                                                         use_bias, fold_vo, dw_lanes):
    """With one head the kernel multiplies by W_V W_O (one product per row instead of two) and
    turns that product's gradient into W_V's, W_O's and b_V's once per step; a frozen W_V or W_O
    that is not an identity (perturbed here) takes part as a given matrix. Both ways, both ways of
    summing weight gradients, against the hooked model."""
    config = small(d_model=24, ln=True, use_bias=use_bias, freeze_wv=freeze_wv,
                   freeze_wo=freeze_wo, n_heads=1)
    sds = state_dicts(config, [0, 1], True, scale=0.2)
    ens = kernel_ensemble(config, sds, dw_lanes=dw_lanes, fold_vo=fold_vo)
    assert ens._backend.shape.folds == fold_vo
    check_kernel_against_hooked(config, sds, n=21, rtol=1e-4, dw_lanes=dw_lanes, fold_vo=fold_vo)


def test_the_fold_is_chosen_where_it_applies_and_counted_in_the_flops():
    def shape(n_heads=1, perturbed=False, **model):
        config = small(d_model=64, n_layers=3, n_heads=n_heads, **model)
        ens = Ensemble(config, state_dicts(config, [0], perturbed), backend="torch")
        return ens.kernel_shape().with_const(())  # every row per sequence, as counted below

    learned = shape(freeze_wv=False, freeze_wo=False)
    assert learned.folds and not shape(n_heads=2, freeze_wv=False, freeze_wo=False).folds
    assert not shape(freeze_wv=False).folds  # W_O an exact identity: nothing to fold
    assert shape(freeze_wv=False, perturbed=True).folds  # a given, non-identity W_O: folded
    unfolded = dataclasses.replace(learned, fold_vo=False)
    assert not unfolded.folds and "#define FOLD 0" in unfolded.header(16)
    assert "#define FOLD 1" in learned.header(16)
    # the values' product (4 + 4 + 2 rows in the seed's 3 layers, forward and both gradients) is
    # gone; forming W_VO and turning its gradient into two costs 3 D^3 products per layer
    saved = 128 * sum(6.0 * n * 64 * 64 for n in (4, 4, 2)) - 3 * 3 * 2.0 * 64 ** 3
    assert unfolded.flops_per_step(128) - learned.flops_per_step(128) == pytest.approx(saved)


def test_the_constant_rows_follow_the_masks_and_are_counted_once_per_step():
    """The seed's 3 layers at d_model 64 on the task's data: SEP and the outputs' tokens are
    constant, so are the outputs after layer 0 (they read SEP and themselves); of the 15 rows the
    query and key products take per sequence, 6 are then computed once per step (by hand: layer
    0's queries at SEP and o2, its keys at SEP and o1; layer 1's query at o2 and key at o1)."""
    config = small(d_model=64, n_layers=3)
    shape = Ensemble(config, state_dicts(config, [0], False), backend="torch").kernel_shape()
    assert shape.const0 == (2, 3, 4)  # the task's: SEP and the outputs' fill
    base = shape.with_const(())
    crow = [[t for t, c in enumerate(row) if c] for row in shape.const_rows()]
    assert crow == [[2, 3, 4], [3, 4], [], []]
    assert base.n_const == 0 and shape.n_const == 5 and "#define NCONST 5" in shape.header(8)
    row = 3 * 2.0 * 64 * 64  # a row through a frozen-weight product: forward, the input's gradient
    assert base.flops_per_step(1) == pytest.approx(shape.flops_per_step(1))
    assert base.flops_per_step(128) - shape.flops_per_step(128) == pytest.approx(
        127 * (6 * row + 5 * 6.0 * 64))  # and layer 0's attention at o1 and o2: 2 scores, 3 mixes

def reference_steps(config, sd, batches, lrs, max_norm, wd):
    """The hooked model trained by torch: AdamW, the lr of each step set on the param group, and
    ``clip_grad_norm_`` before each step (when max_norm > 0)."""
    model = ListCopyTransformer(config)
    model.load_state_dict(sd)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lrs[0], weight_decay=wd)
    data = dataset(config)
    L = config.task.list_len
    losses = []
    for rows, lr in zip(batches, lrs):
        for group in opt.param_groups:
            group["lr"] = lr
        logits = model(data.train_inputs[rows])[:, L + 1:]
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]),
                               data.train_targets[rows][:, L + 1:].reshape(-1))
        opt.zero_grad()
        loss.backward()
        if max_norm > 0:
            torch.nn.utils.clip_grad_norm_(params, max_norm)
        opt.step()
        losses.append(loss.item())
    return model.state_dict(), losses


@pytest.mark.parametrize("d_model,extra", [(8, {}), (32, {"ln": True, "use_bias": True,
                                                          "freeze_wv": False, "freeze_wo": False})])
def test_a_learning_rate_per_step_and_clipping_equal_torch(d_model, extra):
    """Three members, 12 steps split over two calls: a warmup-like schedule per member, and a clip
    that acts on every step (0.05), one that never does (1e6) and none (0)."""
    config = small(d_model=d_model, **extra)
    E, n_steps, B = 3, 12, 32
    sds = state_dicts(config, range(E), False)
    ens = kernel_ensemble(config, sds)
    data = dataset(config)
    L = config.task.list_len
    g = torch.Generator().manual_seed(0)
    batches = torch.randint(0, data.train_inputs.shape[0], (E, n_steps, B), generator=g)
    lrs = torch.tensor([[1e-3 * (s + 1) / n_steps for s in range(n_steps)],
                        [3e-3] * n_steps,
                        [2e-3 * 0.9 ** s for s in range(n_steps)]], dtype=torch.float64)
    clip = torch.tensor([0.05, 1e6, 0.0], dtype=torch.float64)
    wd = torch.full((E,), 0.01, dtype=torch.float64)
    loss = torch.zeros(E, dtype=torch.float64)
    inputs, targets = data.train_inputs, data.train_targets[:, L + 1:].contiguous()
    for start, stop in ((0, 5), (5, n_steps)):
        ens.train_steps(inputs, targets, batches, start, stop - start, lrs[:, start:stop], wd,
                        torch.ones(E, dtype=torch.bool), loss, max_grad_norm=clip)
    probe = data.val_inputs[:256]
    for e in range(E):
        ref, losses = reference_steps(config, sds[e], batches[e], lrs[e].tolist(),
                                      clip[e].item(), 0.01)
        mine = ens.state_dict(e)
        for name in ens.layout.names:  # b_K: zero gradient in exact arithmetic (AdamW walks noise)
            if not name.endswith(".b_K"):
                assert torch.allclose(mine[name], ref[name], atol=2e-5, rtol=1e-4), (e, name)
        assert loss[e].item() == pytest.approx(sum(losses), rel=1e-5)
        reference = ListCopyTransformer(config)
        reference.load_state_dict(ref)
        with torch.no_grad():
            assert torch.allclose(ens.model(e)(probe), reference(probe), atol=1e-4)


def test_lr_per_step_must_cover_the_stretch():
    config = small()
    ens = kernel_ensemble(config, state_dicts(config, [0], False))
    data = dataset(config)
    with pytest.raises(ValueError, match="lr per step"):
        ens.train_steps(data.train_inputs, data.train_targets[:, 3:].contiguous(),
                        torch.zeros(1, 2, 4, dtype=torch.int64), 0, 3,
                        torch.full((1, 2), 1e-3), torch.zeros(1), torch.ones(1, dtype=torch.bool),
                        torch.zeros(1, dtype=torch.float64))

