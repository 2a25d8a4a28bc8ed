"""Logits as a sum over attention paths (the paper's equations 1-2, 8-15), rebuilt from the
cached patterns and the weights alone.

With no LayerNorm, no value/output/unembedding bias and ``W_V[h] @ W_O[h] = I`` for every head,
a layer adds to each position the pattern-weighted sum of the residuals before it:
``resid_post = (I + sum_h A_h) resid_pre``, A_h the (T, T) pattern of head h. So after the last
layer ``resid = C x``, with ``C = (I + A^{n-1}) ... (I + A^0)`` and ``x[s] = W_E[token_s] + W_pos[s]``:
each entry ``C[t, s]`` is the sum over all paths from position s to position t (a skip or an
attention edge at each layer) of the product of the pattern weights along the path, and the
logits at t are ``sum_s C[t, s] x[s] @ W_U``. Where these conditions fail the analyses here raise
:class:`NotApplicable` with one line saying which.

    >>> C = path_coefficients(patterns)                 # (n_layers, B, H, T, T) -> (B, T, T)
    >>> logits = rebuild_logits(model, tokens, patterns)
    >>> logit_reconstruction(model, config).to_dict()    # mean L2 per output position, acc
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from ..config import Config, ConfigError
from ..task import Dataset, token_labels
from .common import BATCH_SIZE, cached_pass, checked_inputs, pattern_name, to_json

IDENTITY_ATOL = 1e-6  # W_V W_O counts as the identity within this (frozen weights are exact)


class NotApplicable(ConfigError):
    """The analysis's maths does not hold for this model or task; the message says why (one line)."""


def linear_refusal(model) -> str | None:
    """Why the logits are not a sum over attention paths of this model, or None if they are."""
    cfg = model.config.model
    if cfg.ln:
        return ("the model has LayerNorm, which rescales each position: the logits are not a sum "
                "over attention paths")
    for name, p in model.named_parameters():
        leaf = name.rsplit(".", 1)[-1]
        if leaf in ("b_V", "b_O", "b_U") and bool(p.detach().abs().max() > 0):
            return (f"the model has a non-zero bias ({name}): the logits are not a sum over "
                    "attention paths")
    eye = torch.eye(cfg.d_model)
    for layer, block in enumerate(model.blocks):
        ov = (block.attn.W_V.detach().float().cpu() @ block.attn.W_O.detach().float().cpu())
        for h in range(ov.shape[0]):
            if not torch.allclose(ov[h], eye, atol=IDENTITY_ATOL):
                why = ("n_heads > 1 gives each head a d_head slice" if cfg.d_head < cfg.d_model
                       else "learned W_V / W_O")
                return (f"W_V W_O of layer {layer} head {h} is not the identity ({why}): the "
                        "logits are not pattern weights times embedding vectors")
    return None


def check_linear(model) -> None:
    why = linear_refusal(model)
    if why is not None:
        raise NotApplicable(why)


def path_coefficients(patterns: Tensor) -> Tensor:
    """(n_layers, B, H, T, T) patterns -> (B, T, T) ``C``: ``C[b, t, s]`` sums, over the paths from
    position s to position t through the layers, the product of the pattern weights taken."""
    n_layers, B, _, T, _ = patterns.shape
    eye = torch.eye(T, dtype=torch.float64, device=patterns.device)
    C = eye.expand(B, T, T)
    for layer in range(n_layers):
        C = (eye + patterns[layer].double().sum(1)) @ C
    return C


def source_vectors(model, tokens: Tensor) -> Tensor:
    """(B, T, D) ``x[s] = W_E[token_s] + W_pos[s]``, in float64: what each path starts from."""
    W_E = model.W_E.detach().double()
    W_pos = model.W_pos.detach().double()
    return W_E[tokens] + W_pos[: tokens.shape[1]]


def rebuild_logits(model, tokens: Tensor, patterns: Tensor) -> Tensor:
    """(B, T, V) float64 logits as the sum over paths: ``C x W_U`` (check :func:`linear_refusal`
    first: elsewhere this is not the model's output)."""
    C = path_coefficients(patterns)
    return C @ source_vectors(model, tokens.to(C.device)) @ model.W_U.detach().double()


def stacked_patterns(acts: dict[str, Tensor], n_layers: int) -> Tensor:
    """The patterns of one cached pass, (n_layers, B, H, T, T)."""
    return torch.stack([acts[pattern_name(layer)] for layer in range(n_layers)])


@dataclass(frozen=True)
class ReconstructionResult:
    """The rebuilt logits against the model's, on the validation set."""

    labels: tuple[str, ...]           # output positions: o1 .. oL
    mean_l2: tuple[float, ...]        # per output position: mean ||rebuilt - model|| over lists
    max_abs: float                    # largest |rebuilt - model| of any logit
    acc: float                        # per-token accuracy of the rebuilt logits
    per_position_acc: tuple[float, ...]
    model_acc: float                  # the model's own accuracy, for comparison
    n_val: int

    def to_dict(self) -> dict:
        return to_json({"labels": list(self.labels), "mean_l2": list(self.mean_l2),
                        "max_abs": self.max_abs, "acc": self.acc,
                        "per_position_acc": list(self.per_position_acc),
                        "model_acc": self.model_acc, "n_val": self.n_val})


@torch.no_grad()
def logit_reconstruction(model, config: Config, data: Dataset | None = None,
                         batch_size: int = BATCH_SIZE) -> ReconstructionResult:
    """Rebuild every validation list's logits from its cached patterns and ``W_E``, ``W_pos``,
    ``W_U`` as a sum over attention paths; compare with the model's logits at the outputs."""
    data = checked_inputs(model, config, data, batch_size)
    check_linear(model)
    L, n_layers = config.task.list_len, config.model.n_layers
    out = config.task.output_slice
    names = [pattern_name(layer) for layer in range(n_layers)]
    l2 = torch.zeros(L, dtype=torch.float64)
    hits = torch.zeros(L, dtype=torch.float64)
    model_hits = torch.zeros(L, dtype=torch.float64)
    max_abs = 0.0
    start = 0
    for tokens, logits, acts in cached_pass(model, data.val_inputs, names, batch_size=batch_size):
        rebuilt = rebuild_logits(model, tokens, stacked_patterns(acts, n_layers))[:, out]
        mine = logits[:, out].double()
        target = data.val_targets[start: start + tokens.shape[0], out].to(mine.device)
        start += tokens.shape[0]
        diff = rebuilt - mine
        l2 += diff.norm(dim=-1).sum(0).cpu()
        max_abs = max(max_abs, float(diff.abs().max()))
        hits += (rebuilt.argmax(-1) == target).double().sum(0).cpu()
        model_hits += (mine.argmax(-1) == target).double().sum(0).cpu()
    n = data.val_inputs.shape[0]
    return ReconstructionResult(
        labels=tuple(token_labels(L)[L + 1:]), mean_l2=tuple((l2 / n).tolist()), max_abs=max_abs,
        acc=float(hits.sum() / (n * L)), per_position_acc=tuple((hits / n).tolist()),
        model_acc=float(model_hits.sum() / (n * L)), n_val=n)
