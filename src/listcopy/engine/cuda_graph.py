"""Training steps on a GPU replayed as one CUDA graph: most of a small ensemble's launch cost gone.

On a GPU a step of these models is a few hundred tiny kernels, each launched from Python: one
default model took 7.9 ms per step on an H100, 90x the CPU kernel, and 64 models 8.7 ms; replayed
as a graph, 0.69 and 0.86 ms on an H200 (12.1 ms eager there). A CUDA graph records one whole
step once (pick the step's batch rows, forward, backward, clipping, AdamW, add the loss) and
replays it with one launch. Everything the step reads lives in static device buffers: the step's
index and AdamW's step count are device tensors the graph itself advances, so the same graph
serves every step of every stretch.

``GraphedTorch`` wraps the torch backend on cuda: a stretch runs as graph replays, of every
member or, once some have stopped, of the active ones (their weights and moments gathered into
buffers kept while the same members train, so one capture serves each set of active members;
eager steps would cost 12 ms a step on an H200, 17x a replay). Where capture fails (a one-line
notice, then never again for this ensemble) the wrapped backend's eager steps run instead.
``graph_step`` is the step itself, device-agnostic: tests run it eagerly on the CPU against the
eager backend.

Measured and tested on an H200 (tests/gpu/, benchmarks/README.md "On a GPU (NVIDIA H200, CUDA
graphs)"); at 8192 models the step is memory-bound and a graph gains nothing (15.9 ms, 15.6 eager).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch
from torch import Tensor

from .backend import Stretch
from .kernel_build import reason
from .optim import BETAS, EPS, AdamW, clip_grad_norm_
from .params import Params
from .torch_backend import TorchBackend

log = logging.getLogger("listcopy")
WARMUP_STEPS = 3  # eager steps on a side stream before capture (allocations, cuBLAS handles)


def graphs_apply(device: torch.device) -> bool:
    """Whether training steps on ``device`` can be CUDA graphs: cuda, and torch sees a GPU."""
    return device.type == "cuda" and torch.cuda.is_available()


@dataclass
class StepBuffers:
    """What one captured step reads and writes besides the parameters and moments: static
    device tensors, refilled before each stretch (``load``)."""

    inputs: Tensor  # (N, T)
    targets: Tensor  # (N, L)
    batches: Tensor  # (E, n_batches, B)
    lr: Tensor  # (E, cap): the stretch's learning rates, step by step
    wd: Tensor  # (E, 1)
    clip: Tensor | None  # (E,)
    first: Tensor  # () int64: the stretch's first batch index
    i: Tensor  # () int64: steps taken in this stretch
    t: Tensor  # () float64: AdamW's step count (its bias corrections in float64, as optim.py's)
    loss: Tensor  # (E,) summed over the stretch

    @classmethod
    def like(cls, s: Stretch, params: Params, cap: int) -> "StepBuffers":
        dev, dtype, E = params.flat.device, params.flat.dtype, params.n_members
        clip = None if s.max_grad_norm is None else torch.zeros(E, device=dev, dtype=dtype)
        return cls(torch.empty_like(s.inputs), torch.empty_like(s.targets),
                   torch.empty_like(s.batches), torch.zeros(E, cap, device=dev, dtype=dtype),
                   torch.zeros(E, 1, device=dev, dtype=dtype), clip,
                   torch.zeros((), dtype=torch.int64, device=dev),
                   torch.zeros((), dtype=torch.int64, device=dev),
                   torch.zeros((), device=dev, dtype=torch.float64),
                   torch.zeros(E, device=dev, dtype=dtype))

    def load(self, s: Stretch, step: int) -> None:
        """This stretch's data, rates and counters (device copies, no host sync)."""
        self.inputs.copy_(s.inputs)
        self.targets.copy_(s.targets)
        self.batches.copy_(s.batches)
        lr = s.lr if s.lr.dim() == 2 else s.lr.reshape(-1, 1).expand(-1, s.n_steps)
        self.lr[:, : s.n_steps].copy_(lr)
        self.wd.copy_(s.weight_decay.reshape(-1, 1))
        if self.clip is not None:
            self.clip.copy_(s.max_grad_norm)
        self.first.fill_(s.batch0)
        self.i.zero_()
        self.t.fill_(step)
        self.loss.zero_()


def adamw_graph_update(optim: AdamW, param: Tensor, grad: Tensor, lr: Tensor, wd: Tensor,
                       t: Tensor) -> None:
    """optim.py's AdamW update with the step count ``t`` a device tensor (advanced here), so a
    captured graph computes each replay's bias corrections itself."""
    beta1, beta2 = BETAS
    t.add_(1)
    optim.exp_avg.lerp_(grad, 1 - beta1)
    optim.exp_avg_sq.mul_(beta2).add_((1 - beta2) * grad * grad)
    step_size = lr / (1 - torch.pow(beta1, t)).to(lr.dtype)
    denom = (optim.exp_avg_sq.sqrt() / torch.sqrt(1 - torch.pow(beta2, t)).to(lr.dtype)).add_(EPS)
    param.mul_(1 - lr * wd).sub_(step_size * optim.exp_avg / denom)


def graph_step(backend: TorchBackend, params: Params, optim: AdamW, buf: StepBuffers,
               const: frozenset[int]) -> None:
    """One training step of every member from the static buffers: what the graph records."""
    n_batches = buf.batches.shape[1]
    col = torch.remainder(buf.first + buf.i, n_batches).reshape(1)
    rows = buf.batches.index_select(1, col).squeeze(1)  # (E, B)
    loss, grad = backend._loss_and_grad(params, buf.inputs[rows], buf.targets[rows], const)
    if buf.clip is not None:  # sync-free: a factor of 1 where nothing is clipped
        clip_grad_norm_(grad, buf.clip, [(a, b) for _, _, a, b in params.layout.spans()])
    lr = buf.lr.index_select(1, buf.i.reshape(1))  # (E, 1)
    adamw_graph_update(optim, params.flat.detach(), grad, lr, buf.wd, buf.t)
    buf.loss.add_(loss.to(buf.loss.dtype))
    buf.i.add_(1)


class GraphedTorch:
    """The torch backend on cuda with its training steps as CUDA graph replays (see module)."""

    name = "torch"

    def __init__(self, inner: TorchBackend):
        self.inner = inner
        self.failed = False
        self._graph: tuple[tuple, torch.cuda.CUDAGraph, StepBuffers] | None = None
        self._sub: tuple[tuple[int, ...], Params, AdamW] | None = None  # see _subset

    def __getattr__(self, attr):  # evaluate, predict, loss_and_grad: the eager backend's
        return getattr(self.inner, attr)

    def train_steps(self, params: Params, optim: AdamW, s: Stretch) -> None:
        if self.failed or s.n_steps < 1:
            return self.inner.train_steps(params, optim, s)
        idx = s.active.reshape(-1).nonzero().flatten()  # one host sync per stretch, as eager
        if idx.numel() == params.n_members:
            return self._replay(params, optim, s)
        if idx.numel() == 0:
            return self.inner.train_steps(params, optim, s)  # nothing trains: the count moves
        sub, sub_optim = self._subset(params, optim, idx)
        part = Stretch(s.inputs, s.targets, s.batches[idx], s.batch0, s.n_steps,
                       s.lr.reshape(params.n_members, -1)[idx], s.weight_decay.reshape(-1)[idx],
                       s.active.reshape(-1)[idx],
                       torch.zeros(idx.numel(), dtype=s.loss_sum.dtype, device=s.loss_sum.device),
                       None if s.max_grad_norm is None else s.max_grad_norm.reshape(-1)[idx])
        self._replay(sub, sub_optim, part)
        params.put(idx, sub)
        optim.put(idx, sub_optim)
        s.loss_sum[idx] += part.loss_sum

    def _subset(self, params: Params, optim: AdamW, idx: Tensor) -> tuple[Params, AdamW]:
        """The active members' weights and moments, in buffers kept while the same members train
        (so their graph stays captured), refreshed in place from the ensemble's."""
        key = tuple(idx.tolist())
        if self._sub is None or self._sub[0] != key:
            self._sub = (key, params.take(idx), optim.take(idx))
        else:
            sub, sub_optim = self._sub[1], self._sub[2]
            with torch.no_grad():
                sub.flat.copy_(params.flat.detach()[idx])
                sub_optim.exp_avg.copy_(optim.exp_avg[idx])
                sub_optim.exp_avg_sq.copy_(optim.exp_avg_sq[idx])
        self._sub[2].step = optim.step
        return self._sub[1], self._sub[2]

    def _replay(self, params: Params, optim: AdamW, s: Stretch) -> None:
        """A stretch in which every member of ``params`` trains: graph replays."""
        const = self.inner.forward.const_positions(s.inputs)
        try:
            graph, buf = self._captured(params, optim, s, const)
        except RuntimeError as err:  # capture refused: eager steps from now on
            self.failed, self._graph = True, None
            log.warning("listcopy: CUDA graph capture failed (%s); eager steps", reason(err))
            return self.inner.train_steps(params, optim, s)
        buf.load(s, optim.step)
        for _ in range(s.n_steps):
            graph.replay()
        optim.step += s.n_steps
        s.loss_sum.add_(buf.loss.to(s.loss_sum.dtype))  # in place: Stretch is frozen

    def _captured(self, params: Params, optim: AdamW, s: Stretch,
                  const: frozenset[int]) -> tuple[torch.cuda.CUDAGraph, StepBuffers]:
        """The graph for this stretch's shapes, captured on first use (the parameters and moments
        are put back after the warm-up steps, so capture changes nothing, failed or not)."""
        key = (tuple(s.inputs.shape), tuple(s.batches.shape), s.max_grad_norm is None, const,
               params.flat.data_ptr(), optim.exp_avg.data_ptr(), optim.exp_avg_sq.data_ptr())
        if self._graph is not None and self._graph[0] == key and self._graph[2].lr.shape[1] >= s.n_steps:
            return self._graph[1], self._graph[2]
        cap = 1 << max(0, (s.n_steps - 1).bit_length())
        buf = StepBuffers.like(s, params, cap)
        buf.load(s, optim.step)
        saved = [t.detach().clone() for t in (params.flat, optim.exp_avg, optim.exp_avg_sq)]
        try:
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):
                for _ in range(WARMUP_STEPS):
                    graph_step(self.inner, params, optim, buf, const)
            torch.cuda.current_stream().wait_stream(side)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph, stream=side):
                graph_step(self.inner, params, optim, buf, const)
        finally:  # the warm-up's steps undone, also where capture failed (eager steps follow)
            with torch.no_grad():
                for t, old in zip((params.flat, optim.exp_avg, optim.exp_avg_sq), saved):
                    t.copy_(old)
        self._graph = (key, graph, buf)
        return graph, buf
