"""The kernel backend: the compiled CPU kernel (kernel.py, kernel.c) behind the ``Backend`` protocol.

It applies on the CPU to every configuration up to d_model ``MAX_D_MODEL`` (:func:`unfit` says
why not otherwise; whether it is the fastest choice is choice.py's). Frozen weights that are
identities (W_V, W_O) or zero (biases) are left out of the kernel's arithmetic; other frozen
weights are passed in a ``fixed`` buffer (E, F) built per call. The kernel writes
through raw pointers, so every call first checks what it relies on (contiguous float32 CPU
buffers, tokens, targets and batch rows in range). Long work is split into calls of at most
``CALL_FLOPS`` per thread (a few hundredths of a second here), so that Ctrl-C is answered between
two calls; the kernel adds each step's and each row's results in order, so any split gives
bit-identical results. A call never starts more threads than active members or usable CPUs.
"""

from __future__ import annotations

import contextlib
import math
import os
from typing import Iterator

import torch
from torch import Tensor

from ..config import Config
from . import kernel_build
from .backend import Stretch
from .forward import PrunedForward
from .kernel import GIVEN, MAX_D_MODEL, TRAINED, Kernel, KernelShape
from .optim import AdamW
from .params import Layout, Params, WeightFacts
from .rows import RowNeeds

# work per thread in one kernel call: 0.02-0.04 s on this project's VMs, 0.8 s at 5 GFLOP/s. A call
# runs each member's steps one after another: at d_model 32, E = 64, 1e9 gave one step per member
# per call and 4e9 four, 1.5-3% faster (each member's weights and moments stay in cache)
CALL_FLOPS = 4e9
ROW_ALIGN = 64  # evaluation calls start at multiples of this many rows (a multiple of the lanes)


def unfit(config: Config, device: torch.device) -> str | None:
    """Why the kernel cannot run these members, or None."""
    if device.type != "cpu":
        return f"device {device}"
    if config.model.d_model > MAX_D_MODEL:
        return f"d_model > {MAX_D_MODEL}"
    return None


def kernel_shape(config: Config, layout: Layout, needs: RowNeeds, facts: WeightFacts,
                 frozen_shapes: dict[str, tuple[int, ...]], *, dw_lanes: bool = True) -> KernelShape:
    """The kernel's shape for these members: trained parameters where the layout puts them, frozen
    ones the kernel must read (not identities, not zero) given in that order in ``fixed``."""
    task, cfg = config.task, config.model
    where = {name: (TRAINED, off) for name, off in zip(layout.names, layout.offsets)}
    F = 0
    for name in layout.frozen:
        if _left_out(name, facts):
            continue
        where[name] = (GIVEN, F)
        F += math.prod(frozen_shapes[name])
    return KernelShape(T=task.seq_len, L=task.list_len, D=cfg.d_model, H=cfg.n_heads,
                       V=task.vocab, ln=cfg.ln, where=tuple(where.items()), P=layout.size, F=F,
                       needs=needs, dw_lanes=dw_lanes)


def _left_out(name: str, facts: WeightFacts) -> bool:
    """A frozen parameter the kernel need not read: an identity W_V / W_O, a zero bias."""
    leaf = name.rsplit(".", 1)[-1]
    return ((leaf == "W_V" and facts.identity_v) or (leaf == "W_O" and facts.identity_o)
            or (leaf.startswith("b_") and not facts.bias))


def usable_cpus() -> int:
    """CPUs this process may run on (its affinity where the OS tells it)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


class KernelBackend:
    name = "kernel"

    def __init__(self, kernel: Kernel, call_flops: float = CALL_FLOPS):
        self.kernel, self.shape, self.call_flops = kernel, kernel.shape, call_flops
        self.seq_flops = self.shape.flops_per_sequence()
        self.step_flops: dict[int, float] = {}  # by batch size (a Python sum: once, not per call)
        self._by_const: dict[tuple[int, ...], Kernel] = {}  # built for the data's constant tokens
        self.held_threads: int | None = None  # torch's thread count, held while host_serial()

    def kernel_for(self, tokens: Tensor) -> Kernel:
        """The kernel for this token table: the shape's own where its constant positions (the
        task's SEP and outputs) hold one token in every row, as in the task's data; otherwise
        the variant for the positions that do (built on first use), which computes the rows it
        keeps constant once per step."""
        same = PrunedForward.const_positions(tokens)
        if same.issuperset(self.shape.const0):
            return self.kernel
        shape = self.shape.with_const(same)
        if shape.const0 not in self._by_const:
            kernel = kernel_build.load(shape)
            if kernel is None:
                raise RuntimeError("the CPU kernel for these tokens did not build")
            self._by_const[shape.const0] = kernel
        return self._by_const[shape.const0]

    @classmethod
    def load(cls, shape: KernelShape) -> "KernelBackend | None":
        """The backend for ``shape``, or None where the kernel does not build (with a notice)."""
        kernel = kernel_build.load(shape)
        return None if kernel is None else cls(kernel)

    def threads(self, n_active: int) -> int:
        """Threads for a call over ``n_active`` members: torch's setting (as it was when
        :meth:`host_serial` began), at most one per member and per usable CPU."""
        wanted = self.held_threads or torch.get_num_threads()
        return max(1, min(wanted, n_active, usable_cpus()))

    @contextlib.contextmanager
    def host_serial(self) -> Iterator[None]:
        """Torch on one thread, the kernel on torch's thread count: torch's OpenMP and BLAS
        workers spin for a while after each parallel op of theirs (the range checks, batch
        indexing), on the cores the kernel's threads need; with two threads that made 100-step
        calls at d_model 1 1.18x slower."""
        if self.held_threads is not None or torch.get_num_threads() == 1:
            yield
            return
        self.held_threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            yield
        finally:
            torch.set_num_threads(self.held_threads)
            self.held_threads = None

    def steps_per_call(self, batch_size: int, n_active: int, n_threads: int) -> int:
        """Steps per call: at most ``call_flops`` per thread, at least one."""
        per_thread = math.ceil(max(n_active, 1) / n_threads)
        if batch_size not in self.step_flops:
            self.step_flops[batch_size] = self.shape.flops_per_step(batch_size)
        return _count(self.call_flops / (self.step_flops[batch_size] * per_thread), 1)

    def rows_per_call(self, n_active: int, n_threads: int) -> int:
        """Evaluated rows per call: at most ``call_flops`` per thread, a multiple of ROW_ALIGN."""
        per_thread = math.ceil(max(n_active, 1) / n_threads)
        rows = _count(self.call_flops / (self.seq_flops * per_thread), ROW_ALIGN)
        return rows // ROW_ALIGN * ROW_ALIGN

    def train_steps(self, params: Params, optim: AdamW, s: Stretch) -> None:
        E, n_batches, B = s.batches.shape
        if E != params.n_members:
            raise ValueError(f"batches for {E} members, the ensemble has {params.n_members}")
        theta = _theta(params, optim)
        tokens, targets = _tokens(s.inputs, self.shape), _targets(s.targets, self.shape)
        rows = s.batches.contiguous()
        if rows.dtype != torch.int64 or rows.min() < 0 or rows.max() >= tokens.shape[0]:
            raise ValueError("batch rows must be int64 indices into the data table")
        if s.loss_sum.dtype != torch.float64 or not s.loss_sum.is_contiguous():
            raise ValueError("loss_sum must be a contiguous float64 tensor")
        on = s.active.reshape(-1).to(torch.uint8).contiguous()
        n_active = int(on.sum())
        threads = self.threads(n_active)
        per_call = self.steps_per_call(B, n_active, threads)
        lr, wd = _lr(s.lr, E, s.n_steps), _f64(s.weight_decay)
        clip = None if s.max_grad_norm is None else _f64(s.max_grad_norm)
        fixed = self._fixed(params)
        if not n_active:
            optim.step += s.n_steps
        kernel = self.kernel_for(tokens) if n_active else self.kernel
        for done in range(0, s.n_steps if n_active else 0, per_call):
            n = min(per_call, s.n_steps - done)
            kernel.train(theta, optim.exp_avg, optim.exp_avg_sq,
                              lr if lr.dim() == 1 else lr[:, done: done + n].contiguous(), wd, on,
                              tokens, targets, rows, (s.batch0 + done) % n_batches, n, optim.step,
                              s.loss_sum, n_threads=threads, fixed=fixed, max_grad_norm=clip)
            optim.step += n

    def _fixed(self, params: Params) -> Tensor | None:
        """The frozen parameters the kernel reads, (E, F) in the shape's order, or None."""
        names = self.shape.given_names()
        if not names:
            return None
        E = params.n_members
        out = torch.cat([params.frozen[n].detach().reshape(E, -1).float() for n in names], 1)
        return out.contiguous()

    def loss_and_grad(self, params: Params, tokens: Tensor,
                      targets: Tensor) -> tuple[Tensor, Tensor]:
        E, B = params.n_members, tokens.shape[-2]
        L = self.shape.L
        table = _tokens(tokens.expand(E, B, tokens.shape[-1]).reshape(E * B, -1), self.shape)
        out_targets = _targets(targets.expand(E, B, L).reshape(E * B, L), self.shape)
        rows = torch.arange(E * B).view(E, B)
        loss = torch.zeros(E, dtype=torch.float64)
        grad = torch.zeros(E, params.layout.size)
        self.kernel_for(table).grad(_theta(params), table, out_targets, rows, loss, grad,
                         n_threads=self.threads(E), fixed=self._fixed(params))
        return loss.float(), grad

    def evaluate(self, params: Params, inputs: Tensor, out_targets: Tensor,
                 active: Tensor | None, chunk: int | None) -> dict[str, Tensor]:
        n, L = inputs.shape[0], self.shape.L
        on = None if active is None else active.reshape(-1).to(torch.uint8).contiguous()
        loss, hits, seq_hits = self._eval_calls(params, on, _tokens(inputs, self.shape),
                                                _targets(out_targets, self.shape), None)
        return {"loss": (loss / (n * L)).float(), "acc": hits.float() / (n * L),
                "seq_acc": seq_hits.float() / n}

    def predict(self, params: Params, inputs: Tensor) -> Tensor:
        E, N, L = params.n_members, inputs.shape[0], self.shape.L
        logits = torch.empty(E, N, L, self.shape.V)
        self._eval_calls(params, None, _tokens(inputs, self.shape),
                         torch.zeros(N, L, dtype=torch.int64), logits)
        return logits

    def _eval_calls(self, params: Params, on: Tensor | None, tokens: Tensor, targets: Tensor,
                    logits: Tensor | None) -> tuple[Tensor, Tensor, Tensor]:
        """Summed CE, token hits and sequence hits per member over every row, in calls of
        ``rows_per_call`` rows."""
        E = params.n_members
        theta = _theta(params)
        stats = (torch.zeros(E, dtype=torch.float64), torch.zeros(E, dtype=torch.int64),
                 torch.zeros(E, dtype=torch.int64))
        n_active = E if on is None else int(on.sum())
        threads = self.threads(n_active)
        per_call, N = self.rows_per_call(n_active, threads), tokens.shape[0]
        fixed = self._fixed(params)
        kernel = self.kernel_for(tokens) if n_active and N else self.kernel
        for start in range(0, N, per_call) if n_active else ():
            kernel.evaluate(theta, on, tokens, targets, *stats, logits=logits,
                                 n_threads=threads, rows=(start, min(N, start + per_call)),
                                 fixed=fixed)
        return stats


def _count(x: float, least: int) -> int:
    """``floor(x)``, at least ``least``, finite (``call_flops`` may be infinite)."""
    return max(least, int(min(x, 1 << 62)))


def _theta(params: Params, optim: AdamW | None = None) -> Tensor:
    """``flat`` for the kernel, which writes through raw pointers: check what it relies on."""
    shape = tuple(params.flat.shape)
    buffers = [params.flat] + ([] if optim is None else [optim.exp_avg, optim.exp_avg_sq])
    for t in buffers:
        if (tuple(t.shape) != shape or t.dtype != torch.float32 or t.device.type != "cpu"
                or not t.is_contiguous()):
            raise ValueError(f"parameters and moments must be contiguous float32 CPU {shape}")
    return params.flat.detach()


def _tokens(inputs: Tensor, shape: KernelShape) -> Tensor:
    tokens = inputs.to(torch.int64).contiguous()
    if tokens.dim() != 2 or tokens.shape[1] != shape.T:
        raise ValueError(f"inputs must be (N, {shape.T}), got {tuple(tokens.shape)}")
    if tokens.numel() and (tokens.min() < 0 or tokens.max() >= shape.V):
        raise ValueError(f"tokens must be in [0, {shape.V})")
    return tokens


def _targets(targets: Tensor, shape: KernelShape) -> Tensor:
    out = targets.to(torch.int64).contiguous()
    if out.dim() != 2 or out.shape[1] != shape.L:
        raise ValueError(f"targets must be (N, {shape.L}) at the output positions, "
                         f"got {tuple(out.shape)}")
    if out.numel() and (out.min() < 0 or out.max() >= shape.V):
        raise ValueError(f"targets must be in [0, {shape.V})")
    return out


def _f64(x: Tensor) -> Tensor:
    return x.reshape(-1).to(device="cpu", dtype=torch.float64).contiguous()


def _lr(lr: Tensor, E: int, n_steps: int) -> Tensor:
    """The learning rates as float64: (E,) one per member, or (E, n_steps) one per member and step."""
    if lr.dim() == 2:
        if tuple(lr.shape) != (E, n_steps):
            raise ValueError(f"lr per step must be ({E}, {n_steps}), got {tuple(lr.shape)}")
        return lr.to(device="cpu", dtype=torch.float64).contiguous()
    return _f64(lr)
