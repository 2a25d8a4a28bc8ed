"""What the engine's tests share: small configs and weights, task batches, the hooked model's
loss and gradients (the independent reference), and each backend's comparison against it.

Both backends are checked: "torch" (any configuration) and "kernel" (the compiled CPU kernel, for
the default constraints); tests of the kernel are skipped where no C compiler is available. On a
machine with cuda or mps, the torch backend is also checked there (``DEVICES``), and the training
tests run there too (``train.device`` "auto").
"""

import dataclasses
import itertools
import math

import pytest
import torch
import torch.nn.functional as F

from listcopy.config import Config
from listcopy.engine import Ensemble, choice, kernel_build
from listcopy.engine.kernel_backend import KernelBackend
from listcopy.model import ListCopyTransformer, build_model
from listcopy.task import dataset

DEVICES = ["cpu"] + [d for d, on in (("cuda", torch.cuda.is_available()),
                                      ("mps", torch.backends.mps.is_available())) if on]

FLAG_COMBOS = list(itertools.product([False, True], [False, True], [False, True], [False, True],
                                     [1, 2]))


def small(**model) -> Config:
    return Config().replace(model={"d_model": 8, "n_layers": 2, **model})


def state_dicts(config, seeds, perturb, scale=0.3):
    """Initial weights; with ``perturb`` every parameter (frozen identities, zero biases, LN) gets
    noise, so that no fast path may assume them."""
    out = []
    for seed in seeds:
        model = build_model(config, torch.Generator().manual_seed(seed))
        if perturb:
            g = torch.Generator().manual_seed(100 + seed)
            with torch.no_grad():
                for p in model.parameters():
                    p.add_(scale * torch.randn(p.shape, generator=g))
        out.append(model.state_dict())
    return out


def batch(config, n, seed, arbitrary=4):
    """Task inputs, and ``arbitrary`` rows of arbitrary tokens (none: SEP and the outputs' tokens
    are then the same in every row), with their output targets."""
    g = torch.Generator().manual_seed(seed)
    data = dataset(config)
    rows = torch.randint(0, data.inputs.shape[0], (n - arbitrary,), generator=g)
    inputs = torch.cat([data.inputs[rows], torch.randint(
        0, config.task.vocab, (arbitrary, config.task.seq_len), generator=g)])
    L = config.task.list_len
    targets = torch.cat([data.targets[rows][:, L + 1:],
                         torch.randint(0, config.task.vocab, (arbitrary, L), generator=g)])
    return inputs, targets


def hooked_loss_and_grads(config, sd, inputs, targets):
    model = ListCopyTransformer(config)
    model.load_state_dict(sd)
    L = config.task.list_len
    logits = model(inputs)[:, L + 1:]
    loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1))
    loss.backward()
    grads = {n: p.grad for n, p in model.named_parameters() if p.requires_grad}
    return logits.detach(), loss.detach(), grads


def backends(ens_config, sds, device="cpu", tokens=None):
    """The torch backend, and on cpu the kernel where "auto" picks it (and a compiler exists);
    with ``tokens``, the kernel built for their constant positions alone (``kernel_ensemble``)."""
    out = [Ensemble(ens_config, sds, device, backend="torch")]
    if tokens is None:
        auto = Ensemble(ens_config, sds, device)
        if auto.backend == "kernel":
            out.append(auto)
    elif choice.pick(ens_config).backend == "kernel" and out[0].kernel_shape() is not None:
        ens = kernel_ensemble(ens_config, sds, tokens=tokens)
        if ens is not None:
            out.append(ens)
    return out


def split(ens, flat_grad, member):
    lay = ens.layout
    return {n: flat_grad[member, o: o + math.prod(s)].view(s)
            for n, s, o in zip(lay.names, lay.shapes, lay.offsets)}


def check_against_hooked(config, sds, n=20, rtol=0.0, device="cpu"):
    """Each backend on ``device`` against the hooked model on CPU. The kernel sums in another order
    than torch: its float32 rounding grows with the logits (up to about 40 with perturbed weights
    over 3 layers), so it gets at least 1e-6 relative (a few ulp) besides the 1e-5 absolute."""
    E = len(sds)
    torch_rtol = rtol
    per_member = [batch(config, n, seed=e) for e in range(E)]
    tokens = torch.stack([b[0] for b in per_member])  # (E, n, T)
    targets = torch.stack([b[1] for b in per_member])  # (E, n, L)
    for ens in backends(config, sds, device, tokens=tokens):
        rtol = max(torch_rtol, 1e-6) if ens.backend == "kernel" else torch_rtol
        on = tokens.to(device)
        loss, grad = (t.cpu() for t in ens.loss_and_grad(on, targets.to(device)))
        with torch.no_grad():
            shared = ens.output_logits(on[0]).cpu()  # (E, n, L, V), every member on member 0's batch
        predicted = ens.predict(on[0]).cpu()
        for e in range(E):
            logits, ref_loss, ref_grads = hooked_loss_and_grads(config, sds[e], tokens[e], targets[e])
            ref_shared = hooked_loss_and_grads(config, sds[e], tokens[0], targets[0])[0]
            assert torch.allclose(shared[e], ref_shared, atol=1e-5, rtol=rtol), ens.backend
            assert torch.allclose(predicted[e], ref_shared, atol=1e-5, rtol=rtol), ens.backend
            assert loss[e].item() == pytest.approx(ref_loss.item(), abs=1e-5, rel=rtol), ens.backend
            mine = split(ens, grad, e)
            assert set(mine) == set(ref_grads)
            for name, ref in ref_grads.items():
                assert torch.allclose(mine[name], ref, atol=1e-5, rtol=rtol), (ens.backend, name)


def kernel_ensemble(config, sds, *, dw_lanes=None, fold_vo=True, lanes=None, tokens=None):
    """An ensemble on the compiled kernel (its variant by the table unless ``dw_lanes``; W_V W_O
    folded where it can be unless ``fold_vo`` is False; sequences per SIMD group by this CPU
    unless ``lanes``); None where no C compiler works. With ``tokens``, built for their constant
    positions (what ``kernel_for`` would pick for them) instead of the task's: only the kernel
    that runs is compiled (each build takes a second or two, and a cold cache builds hundreds)."""
    ens = Ensemble(config, sds, backend="torch")
    shape = dataclasses.replace(ens.kernel_shape(dw_lanes), fold_vo=fold_vo)
    if tokens is not None:
        shape = shape.with_const(ens.const_positions(tokens))
    kernel = kernel_build.load(shape, lanes)
    if kernel is None:
        return None
    ens._backend = KernelBackend(kernel)
    return ens


def check_kernel_against_hooked(config, sds, n=20, rtol=0.0, atol=1e-5, arbitrary=4, **kernel):
    """The kernel (``kernel_ensemble``'s options) against the hooked model: logits, predictions,
    losses and gradients per member, on task rows and ``arbitrary`` rows of arbitrary tokens
    (with none, the kernel variant that computes the constant rows once per step)."""
    E = len(sds)
    per_member = [batch(config, n, seed=e, arbitrary=arbitrary) for e in range(E)]
    tokens = torch.stack([b[0] for b in per_member])
    targets = torch.stack([b[1] for b in per_member])
    ens = kernel_ensemble(config, sds, tokens=tokens, **kernel)
    table = tokens.reshape(-1, tokens.shape[-1])
    assert (ens._backend.kernel_for(table).shape.n_const > 0) == (arbitrary == 0)
    loss, grad = ens.loss_and_grad(tokens, targets)
    predicted = ens.predict(tokens[0])
    for e in range(E):
        _, ref_loss, ref_grads = hooked_loss_and_grads(config, sds[e], tokens[e], targets[e])
        ref_shared = hooked_loss_and_grads(config, sds[e], tokens[0], targets[0])[0]
        assert torch.allclose(predicted[e], ref_shared, atol=atol, rtol=rtol)
        assert loss[e].item() == pytest.approx(ref_loss.item(), abs=atol, rel=rtol)
        mine = split(ens, grad, e)
        assert set(mine) == set(ref_grads)
        for name, ref in ref_grads.items():
            assert torch.allclose(mine[name], ref, atol=atol, rtol=rtol), name


def has_kernel():
    return Ensemble(small(), state_dicts(small(), [0], False)).backend == "kernel"


needs_kernel = pytest.mark.skipif(not has_kernel(), reason="no C compiler: no CPU kernel")


def stretch_setup(config, n_members, seed, steps=40, batch=32):
    """Initial weights of ``n_members``, the training table (inputs, output targets) and each
    member's random batches (E, steps, batch) for a stretch of training steps."""
    sds = state_dicts(config, list(range(n_members)), False)
    data = dataset(config)
    L = config.task.list_len
    inputs, targets = data.train_inputs, data.train_targets[:, L + 1:].contiguous()
    g = torch.Generator().manual_seed(seed)
    n = inputs.shape[0]
    batches = torch.stack([torch.randperm(n, generator=g)[:steps * batch].view(steps, batch)
                           for _ in range(n_members)])
    return sds, inputs, targets, batches
