"""Logit lens and attention flow: the residual stream decoded after the embedding and after each
layer, with the attention weights between layers (the research line's attention-flow diagram).

A residual ``resid`` (after ``blocks.0.hook_resid_pre``, the embedding, or after
``blocks.L.hook_resid_post``) is decoded as the model decodes its last one:
``unembed(ln_final(resid))`` (``resid @ W_U + b_U`` without LayerNorm), so the last stage is the
model's own output.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from ..config import Config
from ..task import Dataset, token_labels
from .common import (BATCH_SIZE, cached_pass, checked_inputs, pattern_name, resid_stages,
                     stage_label, to_json)


def decode(model, resid: Tensor) -> Tensor:
    """Logits (..., V) of a residual stream (..., D), as the model decodes its final one."""
    return model.unembed(model.ln_final(resid))


@dataclass(frozen=True, eq=False)
class LogitLensResult:
    labels: tuple[str, ...]        # positions: d1 .. dL, SEP, o1 .. oL
    stages: tuple[str, ...]        # hook names: blocks.0.hook_resid_pre, blocks.L.hook_resid_post
    stage_labels: tuple[str, ...]  # embed, L0, L1, ...
    example_index: int
    tokens: Tensor                 # (T,) input
    targets: Tensor                # (T,) target
    top_token: Tensor              # (S, T) argmax of the decoded logits
    top_prob: Tensor               # (S, T) its probability
    target_prob: Tensor            # (S, T) probability of the target token
    attention: Tensor              # (n_layers, H, T, T) the example's patterns between stages
    val_acc: tuple[float, ...]     # per stage: per-token accuracy of the decoded outputs (val set)

    def to_dict(self) -> dict:
        return to_json({
            "labels": list(self.labels), "stages": list(self.stages),
            "stage_labels": list(self.stage_labels), "example_index": self.example_index,
            "tokens": self.tokens, "targets": self.targets, "top_token": self.top_token,
            "top_prob": self.top_prob, "target_prob": self.target_prob,
            "attention": self.attention, "val_acc": list(self.val_acc)})


@torch.no_grad()
def logit_lens(model, config: Config, data: Dataset | None = None, example: int = 0,
               batch_size: int = BATCH_SIZE) -> LogitLensResult:
    data = checked_inputs(model, config, data, batch_size, example=example)
    n_layers = config.model.n_layers
    stages = resid_stages(n_layers)
    patterns = [pattern_name(layer) for layer in range(n_layers)]

    tokens = data.val_inputs[example]
    targets = data.val_targets[example]
    (_, _, acts), = cached_pass(model, tokens[None], stages + patterns)
    probs = torch.stack([decode(model, acts[s][0]).float().softmax(-1).cpu() for s in stages])
    top_prob, top_token = probs.max(-1)  # (S, T)
    target_prob = probs.gather(-1, targets.expand(len(stages), -1)[..., None])[..., 0]
    attention = torch.stack([acts[p][0] for p in patterns]).float().cpu()

    out = config.task.output_slice
    hits = torch.zeros(len(stages), dtype=torch.float64)
    start = 0
    for x, _, acts in cached_pass(model, data.val_inputs, stages, batch_size=batch_size):
        target = data.val_targets[start: start + x.shape[0], out]  # (B, L)
        start += x.shape[0]
        preds = torch.stack([decode(model, acts[s][:, out]).argmax(-1).cpu() for s in stages])
        hits += (preds == target[None]).double().flatten(1).sum(1)
    val_acc = hits / (data.val_inputs.shape[0] * config.task.list_len)
    return LogitLensResult(
        labels=tuple(token_labels(config.task.list_len)), stages=tuple(stages),
        stage_labels=tuple(stage_label(s) for s in stages), example_index=example,
        tokens=tokens.clone(), targets=targets.clone(), top_token=top_token, top_prob=top_prob,
        target_prob=target_prob, attention=attention, val_acc=tuple(float(a) for a in val_acc))
