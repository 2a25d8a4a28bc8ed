"""Parameter storage for E models of one shape: one flat (E, P) buffer and the frozen tensors.

Every trainable parameter of every member lives in ``Params.flat`` (E, P); a named parameter is a
view into it (``views``), so an optimiser step is a few elementwise ops over (E, P). ``take(idx)``
copies out some members (to train or evaluate only those), ``put(idx, sub)`` writes them back.
``WeightFacts`` says which shortcuts the weights allow (identity W_V / W_O, no biases).

Shapes: E members, P trainable parameters per member.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import torch
from torch import Tensor

from ..config import Config, ModelConfig
from ..gc_pause import gc_paused
from ..model import ListCopyCore, identity_weight


@dataclass(frozen=True)
class Layout:
    """Where each trainable parameter sits in a member's row of ``flat``, and what is frozen."""

    names: tuple[str, ...]  # state-dict names of the trainable parameters, in named_parameters order
    shapes: tuple[tuple[int, ...], ...]
    offsets: tuple[int, ...]
    frozen: tuple[str, ...]  # state-dict names of the frozen parameters

    @property
    def size(self) -> int:
        return self.offsets[-1] + math.prod(self.shapes[-1]) if self.names else 0

    @staticmethod
    def of(model: ListCopyCore) -> "Layout":
        names, shapes, offsets, frozen, offset = [], [], [], [], 0
        for name, param in model.named_parameters():
            if param.requires_grad:
                names.append(name)
                shapes.append(tuple(param.shape))
                offsets.append(offset)
                offset += param.numel()
            else:
                frozen.append(name)
        return Layout(tuple(names), tuple(shapes), tuple(offsets), tuple(frozen))

    def spans(self):
        """(name, shape, start, stop) of each trainable parameter in a member's row."""
        for name, shape, off in zip(self.names, self.shapes, self.offsets):
            yield name, shape, off, off + math.prod(shape)


@dataclass
class Params:
    """The weights of E members: ``flat`` (E, P) trainable, ``frozen`` by name (E, *shape)."""

    layout: Layout
    flat: Tensor
    frozen: dict[str, Tensor]

    @classmethod
    def stack(cls, layout: Layout, state_dicts: Sequence[dict[str, Tensor]],
              device: torch.device) -> "Params":
        E = len(state_dicts)  # one stack per parameter (a call per tensor: 0.75 s for 8192 models)
        flat = torch.cat([torch.empty(E, 0)] + [
            torch.stack([sd[name] for sd in state_dicts]).detach().cpu().reshape(E, -1).float()
            for name, *_ in layout.spans()], 1)
        frozen = {name: torch.stack([sd[name] for sd in state_dicts]).to(device)
                  for name in layout.frozen}
        return cls(layout, flat.to(device).requires_grad_(True), frozen)

    @property
    def n_members(self) -> int:
        return self.flat.shape[0]

    def views(self, flat: Tensor | None = None) -> dict[str, Tensor]:
        """Every parameter by state-dict name, (E, *shape): views of ``flat`` (default: this
        store's) and the frozen tensors."""
        flat = self.flat if flat is None else flat
        out = dict(self.frozen)
        E = flat.shape[0]
        for name, shape, start, stop in self.layout.spans():
            out[name] = flat[:, start:stop].view(E, *shape)
        return out

    def take(self, idx: Tensor) -> "Params":
        """Members ``idx`` as a new store of copies."""
        return Params(self.layout, self.flat.detach()[idx],
                      {k: v[idx] for k, v in self.frozen.items()})

    def put(self, idx: Tensor, sub: "Params") -> None:
        """Write ``sub`` (from :meth:`take`) back to members ``idx``."""
        with torch.no_grad():
            self.flat[idx] = sub.flat

    def state_dicts(self, members: Sequence[int],
                    template: dict[str, Tensor]) -> list[dict[str, Tensor]]:
        """Each member's weights as a state dict of the hooked model (``template`` gives the
        buffers and the order), copied to the host at once, not per tensor."""
        if not members:
            return []
        idx = torch.tensor(list(members), device=self.flat.device)
        host = Params(self.layout, self.flat.detach()[idx].cpu(),
                      {k: v[idx].cpu() for k, v in self.frozen.items()})
        params = host.views()
        with gc_paused():  # E x (a tensor per parameter), none of it cyclic garbage
            return [{name: params[name][j].clone() if name in params else value
                     for name, value in template.items()} for j in range(len(members))]


@dataclass(frozen=True)
class WeightFacts:
    """Shortcuts the weights allow: W_V / W_O frozen identities (slices instead of matmuls), and
    whether any bias is used (configured or non-zero)."""

    identity_v: bool
    identity_o: bool
    bias: bool

    @staticmethod
    def of(config: Config, params: Params) -> "WeightFacts":
        """The facts of every member of ``params`` (one comparison per tensor for all members)."""
        cfg, frozen = config.model, params.frozen
        return WeightFacts(
            identity_v=cfg.freeze_wv and _all_identity(frozen, "W_V", cfg),
            identity_o=cfg.freeze_wo and _all_identity(frozen, "W_O", cfg),
            bias=cfg.use_bias or any(bool(t.any()) for n, t in frozen.items() if ".b_" in n))


def _all_identity(frozen: dict[str, Tensor], which: str, cfg: ModelConfig) -> bool:
    """Whether every member's ``which`` (frozen: (E, H, D, d) or (E, H, d, D)) is eye per head."""
    eye = identity_weight(which, cfg.n_heads, cfg.d_model, cfg.d_head)
    for i in range(cfg.n_layers):
        w = frozen[f"blocks.{i}.attn.{which}"]
        if not torch.equal(w, eye.to(w.device, w.dtype).expand_as(w)):
            return False
    return True
