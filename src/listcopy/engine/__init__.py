"""The vectorised trainer's core: E models of one shape, stacked along a leading member dimension.

    ensemble.py        Ensemble: composes the pieces below (the only class most callers need)
    params.py          Layout, Params (one flat (E, P) buffer, take / put), WeightFacts
    optim.py           AdamW: moments and step count, the update, per-member states for checkpoints;
                       clip_grad_norm_ per member
    rows.py            which rows each layer needs, from one allowed-matrix per layer
    backend.py         the Backend protocol, Stretch (a stretch of training steps)
    torch_backend.py   any configuration, any device: the pruned forward and autograd
    plan.py            the torch backend's pruned plan (rows once per member where constant)
    forward.py         the pruned torch forward (logits at the output positions, differentiable)
    kernel_backend.py  the compiled CPU kernel behind the protocol: checks, call lengths, threads
    kernel.py          the kernel's shape header, modes and ctypes wrapper
    kernel_build.py    compiling and caching the kernel (private cache folders, atomic installs)
    kernel.c           the kernel itself (package data)

``tests/engine/`` holds both backends' logits and gradients equal to the hooked model's.

Shapes: E members, B batch, T positions, L list_len, H heads, D d_model, d d_head, V vocab,
P trainable parameters per member, N rows of a data table.
"""

from .ensemble import BACKENDS, Ensemble
from .optim import BETAS, EPS
from .optim import STATE_KEYS as OPTIMIZER_STATE_KEYS
from .params import Layout

__all__ = ["BACKENDS", "BETAS", "EPS", "Ensemble", "Layout", "OPTIMIZER_STATE_KEYS"]
