"""The research line's recipe in the engine: a learning rate per step (the schedule) and gradient
clipping, against an independent reference - the hooked model trained by torch.optim.AdamW,
LambdaLR and clip_grad_norm_, as the line's train.py does - and the kernel's declining them.
"""

import math

import pytest
import torch
import torch.nn.functional as F

from listcopy.config import Config
from listcopy.engine import Ensemble
from listcopy.engine.optim import clip_grad_norm_
from listcopy.model import ListCopyTransformer, build_model
from listcopy.schedule import lr_table
from listcopy.task import dataset, seed_generator
from listcopy.training import BatchOrder, train

from .helpers import has_kernel, small, state_dicts, stretch_setup


def line_lambda(warmup, max_steps):
    def factor(k):
        if k < warmup:
            return float(k) / float(max(1, warmup))
        progress = float(k - warmup) / float(max(1, max_steps - warmup))
        return 0.5 * (1.0 + math.cos(math.pi * progress))
    return factor


def reference_loop(config, sd, batches_rows, inputs, targets, lr, wd, max_norm, warmup, max_steps):
    """train.py's loop on the hooked model: AdamW, LambdaLR stepped after each step, clipping
    (None = off). Returns the final state dict and each step's total norm before clipping."""
    model = ListCopyTransformer(config)
    model.load_state_dict(sd)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr, weight_decay=wd)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, line_lambda(warmup, max_steps))
    L = config.task.list_len
    norms = []
    for rows in batches_rows:
        logits = model(inputs[rows])[:, L + 1:]
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets[rows].reshape(-1))
        loss.backward()
        if max_norm is not None:
            norms.append(float(torch.nn.utils.clip_grad_norm_(params, max_norm)))
        opt.step()
        opt.zero_grad()
        sched.step()
    return model.state_dict(), norms


def test_schedule_and_clipping_equal_adamw_lambdalr_and_clip_grad_norm():
    """Three members at once: clipping off, clipping that acts on most steps, clipping that
    never acts; each with its own lr; 40 steps through the warmup into the cosine."""
    config = small()
    sds, inputs, targets, batches = stretch_setup(config, 3, seed=1)
    trains = [Config().replace(train={"lr": lr, "lr_schedule": "warmup_cosine", "warmup_steps": 10,
                                      "max_steps": 40}).train for lr in (1e-2, 3e-3, 5e-3)]
    clip = [None, 0.05, 100.0]
    ens = Ensemble(config, sds, backend="torch")
    lr = lr_table(trains, 0, 40)
    ens.train_steps(inputs, targets, batches, 0, 40, lr, torch.full((3,), 0.01, dtype=torch.float64),
                    torch.ones(3, dtype=torch.bool), torch.zeros(3, dtype=torch.float64),
                    torch.tensor([0.0 if c is None else c for c in clip], dtype=torch.float64))
    for e in range(3):
        ref, norms = reference_loop(config, sds[e], batches[e], inputs, targets, trains[e].lr, 0.01,
                                    clip[e], 10, 40)
        mine = ens.state_dict(e)
        for k, v in ref.items():
            assert torch.allclose(mine[k], v, atol=2e-6), (e, k)
        if clip[e] == 0.05:
            assert sum(n > 0.05 for n in norms) > 20  # the clip acted
        if clip[e] == 100.0:
            assert max(norms) < 100.0


def test_clip_grad_norm_by_hand():
    grad = torch.tensor([[3.0, 4.0, 0.0, 12.0], [0.3, 0.4, 0.0, 1.2], [1.0, 1.0, 1.0, 1.0]])
    spans = [(0, 2), (2, 4)]
    norms = clip_grad_norm_(grad, torch.tensor([6.5, 13.0, 0.0]), spans)
    assert torch.allclose(norms, torch.tensor([13.0, 1.3, 2.0]))
    assert torch.allclose(grad[0], torch.tensor([1.5, 2.0, 0.0, 6.0]), atol=1e-6)  # 6.5 / 13
    assert torch.equal(grad[1], torch.tensor([0.3, 0.4, 0.0, 1.2]))  # 1.3 < 13: factor 1
    assert torch.equal(grad[2], torch.ones(4))  # 0: off


def test_training_with_the_recipe_equals_the_lines_loop():
    """``listcopy.train`` with warmup_cosine and clipping: the seed's init and batch order, then
    the reference loop over the hooked model; same weights after 300 steps."""
    config = Config().override(["task.n_digits=20", "train.batch_size=32", "train.max_steps=300",
                                "train.lr_schedule=warmup_cosine", "train.warmup_steps=50",
                                "train.max_grad_norm=0.3", "train.eval_every=100",
                                "train.early_stop_acc=1.0"])
    run = train(config, progress=False)
    gen = seed_generator(config.task, 0)
    sd = build_model(config, gen).state_dict()
    order = BatchOrder(gen, config.task.n_train, 32, reshuffle=False)
    epoch = order.batches(0)
    rows = [epoch[s % order.n_batches] for s in range(300)]
    data = dataset(config)
    L = config.task.list_len
    ref, norms = reference_loop(config, sd, rows, data.train_inputs,
                                data.train_targets[:, L + 1:], 1e-3, 0.01, 0.3, 50, 300)
    assert sum(n > 0.3 for n in norms) > 10
    for k, v in ref.items():
        assert torch.allclose(run.state[k], v, atol=1e-5), k
    assert [h["lr"] for h in run.history] == [
        1e-3 * line_lambda(50, 300)(s - 1) for s in (100, 200, 300)]


def test_the_kernel_declines_a_schedule_or_clipping_until_it_has_them():
    config = small()
    sds = state_dicts(config, [0, 1], False)
    for option in ("train.lr_schedule=warmup_cosine", "train.max_grad_norm=1.0"):
        with_option = config.override([option])
        assert Ensemble(with_option, sds).backend == "torch"
        assert Ensemble(config, sds, trains=[config.train, with_option.train]).backend == "torch"
        if has_kernel():
            with pytest.raises(ValueError, match="no learning-rate schedule or gradient clipping"):
                Ensemble(with_option, sds, backend="kernel")
    if has_kernel():
        ens = Ensemble(config, sds)
        assert ens.backend == "kernel"
        data = dataset(config)
        with pytest.raises(ValueError, match="one learning rate per member"):
            ens.train_steps(data.train_inputs, data.train_targets[:, 3:].contiguous(),
                            torch.zeros(2, 1, 4, dtype=torch.int64), 0, 2,
                            torch.tensor([[1e-3, 2e-3], [1e-3, 1e-3]], dtype=torch.float64),
                            torch.zeros(2, dtype=torch.float64), torch.ones(2, dtype=torch.bool),
                            torch.zeros(2, dtype=torch.float64))
