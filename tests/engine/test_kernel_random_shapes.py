"""The compiled kernel on shapes no other test names: configurations drawn at random (fixed seeds)
over the task (kind, digits, list length, MASK token), the depth (1-4 layers), widths that are not
a multiple of the SIMD lanes, up to 8 heads and every flag. The reference is the hooked model in
float64; the kernel's error against it must stay within a few times the hooked model's own float32
error (with perturbed weights a deep model without LayerNorm reaches logits in the hundreds, where
any fixed tolerance would measure only the rounding)."""

import random

import pytest
import torch
import torch.nn.functional as F

from listcopy.config import Config
from listcopy.model import ListCopyTransformer

from .helpers import (batch, hooked_loss_and_grads, kernel_ensemble, needs_kernel, split,
                      state_dicts)

pytestmark = needs_kernel

# the kernel's error may be this many times the hooked float32 model's, plus this share of the
# largest value (about 32 float32 ulps: a sum of products of residuals in the hundreds)
TIMES, FLOOR = 8.0, 4e-6


def random_config(seed: int) -> Config:
    rng = random.Random(seed)
    d = rng.choice([4, 12, 20, 24, 40, 48, 72])
    task = dict(n_digits=rng.choice([3, 7, 10, 50, 113]), list_len=rng.choice([1, 2, 3, 4]),
                kind=rng.choice(["copy", "reverse", "sort"]), mask_token=rng.random() < 0.3)
    if task["n_digits"] ** task["list_len"] > 10 ** 5:
        task["list_len"] = 2
    flag = lambda: rng.random() < 0.5  # noqa: E731
    model = dict(d_model=d, n_heads=rng.choice([h for h in (1, 2, 3, 4, 8) if d % h == 0]),
                 n_layers=rng.choice([1, 2, 3, 4]), ln=flag(), use_bias=flag(),
                 freeze_wv=flag(), freeze_wo=flag(), layer0_mask=rng.random() < 0.3)
    return Config().replace(task=task, model=model)


def float64_reference(config, sd, tokens, targets):
    model = ListCopyTransformer(config).double()
    model.load_state_dict({k: v.double() if v.is_floating_point() else v for k, v in sd.items()})
    L = config.task.list_len
    logits = model(tokens)[:, L + 1:]
    loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1))
    loss.backward()
    return logits.detach(), loss.item(), {n: p.grad for n, p in model.named_parameters()
                                          if p.requires_grad}


def error(mine: torch.Tensor, exact: torch.Tensor) -> float:
    return (mine.double() - exact).abs().max().item()


@pytest.mark.parametrize("seed", range(12))
def test_the_kernel_is_as_exact_as_the_hooked_model_on_a_random_shape(seed):
    config = random_config(seed)
    d = config.model.d_model
    sds = state_dicts(config, [0, 1], True, scale=0.05 if d > 16 else 0.3)
    arbitrary = 4 * (seed % 2)  # odd seeds: rows of arbitrary tokens (no constant rows)
    per_member = [batch(config, 20, seed=e, arbitrary=arbitrary) for e in range(2)]
    tokens = torch.stack([b[0] for b in per_member])
    targets = torch.stack([b[1] for b in per_member])
    ens = kernel_ensemble(config, sds, tokens=tokens)
    loss, grad = ens.loss_and_grad(tokens, targets)
    predicted = ens.predict(tokens[0])
    for e in range(2):
        logits32, loss32, grads32 = hooked_loss_and_grads(config, sds[e], tokens[e], targets[e])
        _, exact_loss, exact_grads = float64_reference(config, sds[e], tokens[e], targets[e])
        shared64 = float64_reference(config, sds[e], tokens[0], targets[0])[0]
        shared32 = hooked_loss_and_grads(config, sds[e], tokens[0], targets[0])[0]
        bound = lambda ref_err, exact: TIMES * ref_err + FLOOR * exact.abs().max().item()  # noqa
        assert error(predicted[e], shared64) <= bound(error(shared32, shared64), shared64), config
        assert abs(loss[e].item() - exact_loss) <= TIMES * abs(loss32.item() - exact_loss) \
            + FLOOR * abs(exact_loss) + 1e-6
        mine = split(ens, grad, e)
        assert set(mine) == set(exact_grads)
        hooked_err = max(error(grads32[n], g) for n, g in exact_grads.items())
        for name, exact in exact_grads.items():
            assert error(mine[name], exact) <= bound(hooked_err, exact) + 1e-7, (name, config)
