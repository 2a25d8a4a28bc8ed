"""The table the paper's questions are asked of: per list, its digits, its targets, the SAE's latents
at one position of the site, and the layer-0 attention of SEP on the digits.

``alpha[:, i]`` is ``alpha_{s -> d_{i+1}}``: layer 0's pattern at query SEP (index ``list_len``) and
key ``i``, averaged over heads (the paper's models have one head, where it is that head's weight).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from .site import Site, read

BATCH_SIZE = 4096
PATTERN_0 = "blocks.0.attn.hook_pattern"


@dataclass(frozen=True)
class LatentTable:
    inputs: Tensor   # (N, T) int64
    targets: Tensor  # (N, L) int64, what the outputs should be
    z: Tensor        # (N, d_sae) latents at ``position``
    alpha: Tensor    # (N, L) layer-0 attention of SEP on d1 .. dL
    position: int    # the sequence index the latents were read at

    @property
    def lists(self) -> Tensor:
        return self.inputs[:, : self.alpha.shape[1]]


def analysis_position(site: Site, list_len: int) -> int:
    """SEP if the site reads it, else the site's first position."""
    return list_len if list_len in site.positions else site.positions[0]


@torch.no_grad()
def latent_table(model, sae, site: Site, inputs: Tensor, targets: Tensor,
                 batch_size: int = BATCH_SIZE) -> LatentTable:
    """One pass over ``inputs``: latents at the analysis position and SEP's layer-0 attention."""
    task = model.config.task
    L, sep = task.list_len, task.list_len
    position = analysis_position(site, L)
    one = Site(site.hook, (position,))
    device = next(model.parameters()).device
    zs, alphas = [], []
    store: dict[str, Tensor] = {}

    def keep(act: Tensor, hook) -> None:
        store[hook.name] = act

    with model.hooks(fwd_hooks=[(one.hook, keep), (PATTERN_0, keep)]):
        for i in range(0, inputs.shape[0], batch_size):
            model(inputs[i: i + batch_size].to(device))
            zs.append(sae.encode(read(store[one.hook], one).float()).cpu())
            alphas.append(store[PATTERN_0][:, :, sep, :L].mean(1).float().cpu())
    return LatentTable(inputs.cpu(), targets[:, task.output_slice].cpu(), torch.cat(zs),
                       torch.cat(alphas), position)
