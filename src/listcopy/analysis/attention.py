"""Attention patterns: one example's, the mean over the validation set, the seed's leak check and
its "all patterns identical" check; and the layer-0 scores from SEP to the input digits.

Shapes: ``(n_layers, H, Q, K)`` for patterns, Q = K = T = 2 * list_len + 1 positions.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from ..config import Config
from ..task import Dataset, dataset, token_labels
from .common import BATCH_SIZE, cached_pass, checked_inputs, pattern_name, scores_name, to_json

LEAK_EPS = 1e-3  # the seed raises when an output position puts more than this on the input digits


@dataclass(frozen=True, eq=False)
class AttentionResult:
    labels: tuple[str, ...]
    example_index: int           # row of the validation set
    example_tokens: tuple[int, ...]
    example: Tensor              # (n_layers, H, T, T) the example's patterns
    mean: Tensor                 # (n_layers, H, T, T) mean over the validation set
    max_leak: tuple[float, ...]  # per layer: largest mass from an output position onto input digits
    max_deviation: tuple[float, ...]  # per layer: largest |pattern - first example's pattern|
    patterns_constant: tuple[bool, ...]  # per layer: the seed's allclose(pats, pats[0])
    leak_eps: float = LEAK_EPS

    @property
    def leak_ok(self) -> bool:
        return all(leak <= self.leak_eps for leak in self.max_leak)

    def to_dict(self) -> dict:
        return to_json({
            "labels": list(self.labels), "example_index": self.example_index,
            "example_tokens": list(self.example_tokens), "example": self.example,
            "mean": self.mean, "max_leak": list(self.max_leak), "leak_eps": self.leak_eps,
            "leak_ok": self.leak_ok, "max_deviation": list(self.max_deviation),
            "patterns_constant": list(self.patterns_constant)})


@torch.no_grad()
def attention_patterns(model, config: Config, data: Dataset | None = None, example: int = 0,
                       batch_size: int = BATCH_SIZE) -> AttentionResult:
    """Patterns of validation example ``example`` and statistics over the whole validation set."""
    data = checked_inputs(model, config, data, batch_size, example=example)
    L, n_layers = config.task.list_len, config.model.n_layers
    names = [pattern_name(layer) for layer in range(n_layers)]
    total = None
    count = 0
    first: Tensor | None = None
    leak = torch.zeros(n_layers, dtype=torch.float64)
    deviation = torch.zeros(n_layers, dtype=torch.float64)
    constant = [True] * n_layers
    for _, _, acts in cached_pass(model, data.val_inputs, names, batch_size=batch_size):
        pats = torch.stack([acts[n] for n in names], dim=1)  # (B, n_layers, H, T, T)
        if first is None:
            first = pats[0].clone()
        s = pats.double().sum(0)
        total = s if total is None else total + s
        count += pats.shape[0]
        # mass from output queries onto input-digit keys, summed over keys
        mass = pats[..., L + 1:, :L].sum(-1)  # (B, n_layers, H, L)
        leak = torch.maximum(leak, mass.flatten(2).amax(dim=(0, 2)).double().cpu())
        diff = (pats - first).abs()
        deviation = torch.maximum(deviation, diff.flatten(2).amax(dim=(0, 2)).double().cpu())
        for layer in range(n_layers):  # torch.allclose(pats, pats[0].expand_as(pats)) per batch
            if constant[layer]:
                constant[layer] = torch.allclose(pats[:, layer], first[layer].expand_as(pats[:, layer]))
    assert total is not None and first is not None
    mean = (total / count).float().cpu()
    ex = _example_patterns(model, data.val_inputs[example: example + 1], names)
    return AttentionResult(
        labels=tuple(token_labels(L)), example_index=example,
        example_tokens=tuple(int(t) for t in data.val_inputs[example]), example=ex, mean=mean,
        max_leak=tuple(float(x) for x in leak), max_deviation=tuple(float(x) for x in deviation),
        patterns_constant=tuple(bool(c) for c in constant))


def _example_patterns(model, tokens: Tensor, names: list[str]) -> Tensor:
    (_, _, acts), = cached_pass(model, tokens, names)
    return torch.stack([acts[n][0] for n in names]).float().cpu()  # (n_layers, H, T, T)


@torch.no_grad()
def mean_patterns(model, config: Config, data: Dataset | None = None,
                  batch_size: int = BATCH_SIZE) -> Tensor:
    """The mean attention pattern of every layer over the validation set, (n_layers, H, T, T)."""
    data = data if data is not None else dataset(config)
    names = [pattern_name(layer) for layer in range(config.model.n_layers)]
    total = None
    for _, _, acts in cached_pass(model, data.val_inputs, names, batch_size=batch_size):
        s = torch.stack([acts[n] for n in names]).double().sum(1)
        total = s if total is None else total + s
    assert total is not None
    return (total / data.val_inputs.shape[0]).float().cpu()


# ---- SEP -> input digits at layer 0 ----------------------------------------------------------

@dataclass(frozen=True, eq=False)
class SepAttentionResult:
    """Per validation example: the digits, layer-0 scores and weights from SEP to each digit, and
    whether the model gets the example right (data for the research line's scatter plot)."""

    layer: int
    keys: tuple[str, ...]   # ("d1", "d2", ...)
    digits: Tensor          # (N, L) int
    scores: Tensor          # (N, H, L) pre-softmax scores at hook_attn_scores (mask included)
    pattern: Tensor         # (N, H, L) attention weights
    token_correct: Tensor   # (N, L) bool, per output position
    correct: Tensor         # (N,) bool, the whole list right

    def to_dict(self) -> dict:
        return to_json({"layer": self.layer, "keys": list(self.keys), "digits": self.digits,
                        "scores": self.scores, "pattern": self.pattern,
                        "token_correct": self.token_correct, "correct": self.correct})


@torch.no_grad()
def sep_attention(model, config: Config, data: Dataset | None = None, layer: int = 0,
                  batch_size: int = BATCH_SIZE) -> SepAttentionResult:
    data = checked_inputs(model, config, data, batch_size, layer=layer)
    L = config.task.list_len
    names = [scores_name(layer), pattern_name(layer)]
    out = config.task.output_slice
    scores, patterns, preds = [], [], []
    for _, logits, acts in cached_pass(model, data.val_inputs, names, batch_size=batch_size):
        scores.append(acts[names[0]][:, :, L, :L].float().cpu())    # query SEP, keys d1..dL
        patterns.append(acts[names[1]][:, :, L, :L].float().cpu())
        preds.append(logits[:, out].argmax(-1).cpu())
    token_correct = torch.cat(preds) == data.val_targets[:, out]
    return SepAttentionResult(
        layer=layer, keys=tuple(token_labels(L)[:L]), digits=data.val_inputs[:, :L].clone(),
        scores=torch.cat(scores), pattern=torch.cat(patterns), token_correct=token_correct,
        correct=token_correct.all(-1))
