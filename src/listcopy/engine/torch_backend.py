"""The torch backend: any configuration on any device, through the pruned forward and autograd.

Stopped members are left out of each stretch of steps (``Params.take`` / ``put``, one host sync
per stretch); the AdamW update is a handful of elementwise ops over (E, P) (optim.py).
"""

from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F
from torch import Tensor

from ..resources import eval_chunk
from .backend import Stretch
from .forward import PrunedForward
from .optim import AdamW, clip_grad_norm_
from .params import Params


class TorchBackend:
    name = "torch"

    def __init__(self, forward: PrunedForward):
        self.forward = forward

    def train_steps(self, params: Params, optim: AdamW, s: Stretch) -> None:
        idx = s.active.reshape(-1).nonzero().flatten()  # one host sync per stretch of steps
        if idx.numel() == 0:
            optim.step += s.n_steps
            return
        every = idx.numel() == params.n_members
        sub, sub_optim = (params, optim) if every else (params.take(idx), optim.take(idx))
        lr = s.lr.reshape(params.n_members, -1)[idx].to(params.flat.dtype)  # (E', n_steps)
        wd = s.weight_decay.reshape(-1, 1)[idx].to(params.flat.dtype)
        clip = None if s.max_grad_norm is None else s.max_grad_norm.reshape(-1)[idx].to(
            params.flat.dtype)
        spans = [(a, b) for _, _, a, b in params.layout.spans()]
        batches, n_batches = s.batches[idx], s.batches.shape[1]
        total = torch.zeros(idx.numel(), dtype=s.loss_sum.dtype, device=params.flat.device)
        const = self.forward.const_positions(s.inputs)  # any batch of these rows shares them
        for step in range(s.n_steps):
            rows = batches[:, (s.batch0 + step) % n_batches]  # (E', B)
            loss, grad = self._loss_and_grad(sub, s.inputs[rows], s.targets[rows], const)
            if clip is not None:
                clip_grad_norm_(grad, clip, spans)
            sub_optim.update_(sub.flat, grad, lr[:, step: step + 1], wd)
            total += loss
        if not every:
            params.put(idx, sub)
            optim.put(idx, sub_optim)
        s.loss_sum[idx] += total

    def loss_and_grad(self, params: Params, tokens: Tensor,
                      targets: Tensor) -> tuple[Tensor, Tensor]:
        return self._loss_and_grad(params, tokens, targets, None)

    def _loss_and_grad(self, params: Params, tokens: Tensor, targets: Tensor,
                       const_positions: frozenset[int] | None) -> tuple[Tensor, Tensor]:
        """Autograd with one leaf per parameter (views of ``flat``), the gradients concatenated:
        differentiating through slices of ``flat`` would add up a zero-filled (E, P) tensor per
        parameter."""
        flat = params.flat.detach()
        E = flat.shape[0]
        p = params.views(flat)
        leaves = [p[name].requires_grad_(True) for name in params.layout.names]
        loss = self.forward.member_loss(p, tokens, targets, const_positions)
        grads = torch.autograd.grad(loss.sum(), leaves, allow_unused=True)
        grad = torch.cat([torch.zeros(E, leaf[0].numel(), device=flat.device) if g is None
                          else g.reshape(E, -1) for g, leaf in zip(grads, leaves)], 1)
        return loss.detach(), grad

    @torch.no_grad()
    def evaluate(self, params: Params, inputs: Tensor, out_targets: Tensor,
                 active: Tensor | None, chunk: int | None) -> dict[str, Tensor]:
        """In chunks of the N lists; only the active members are computed."""
        E = params.n_members
        idx = None if active is None else active.reshape(-1).nonzero().flatten()
        if idx is None or idx.numel() == E:
            return self._evaluate(params, inputs, out_targets, chunk)
        out = self._evaluate(params.take(idx), inputs, out_targets, chunk)
        full = {k: torch.zeros(E, device=params.flat.device) for k in out}
        for k in out:
            full[k][idx] = out[k]
        return full

    def _evaluate(self, params: Params, inputs: Tensor, out_targets: Tensor,
                  chunk: int | None) -> dict[str, Tensor]:
        E, L = params.n_members, out_targets.shape[1]
        device = params.flat.device
        chunk = chunk or eval_chunk(E, device.type, self.forward.config.batch_size)
        loss, hits, seq_hits = (torch.zeros(E, device=device) for _ in range(3))
        p = params.views(params.flat.detach())
        const = self.forward.const_positions(inputs)
        for start in range(0, inputs.shape[0], chunk):
            logits = self.forward.logits(p, inputs[start: start + chunk], const)  # (E, b, L, V)
            tgt = out_targets[start: start + chunk]
            b = tgt.shape[0]
            ce = F.cross_entropy(logits.reshape(-1, logits.shape[-1]),
                                 tgt.expand(E, b, L).reshape(-1), reduction="none")
            loss += ce.view(E, b * L).sum(1)
            right = logits.argmax(-1) == tgt  # (E, b, L)
            hits += right.sum((1, 2))
            seq_hits += right.all(-1).sum(1)
        n = inputs.shape[0]
        return {"loss": loss / (n * L), "acc": hits / (n * L), "seq_acc": seq_hits / n}

    @torch.no_grad()
    def predict(self, params: Params, inputs: Tensor) -> Tensor:
        return self.forward.logits(params.views(params.flat.detach()), inputs)

    def host_serial(self) -> contextlib.nullcontext:
        return contextlib.nullcontext()  # torch's threads do the work here
