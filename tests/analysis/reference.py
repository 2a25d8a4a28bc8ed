"""Independent constructions the analyses are checked against: a plain-torch forward of the model
(no hooks, the mask built from its rule) with optional edits, and the seed's metrics from logits."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def allowed(list_len: int) -> torch.Tensor:
    """(T, T) bool, query rows x key columns: a key strictly before the query (d1 sees itself),
    and no output position ever sees an input digit."""
    T = 2 * list_len + 1
    ok = torch.zeros(T, T, dtype=torch.bool)
    for q in range(T):
        for k in range(T):
            ok[q, k] = (k < q or q == k == 0) and not (q > list_len and k < list_len)
    return ok


def layer_norm(x, w, b, eps=1e-5):
    x = x - x.mean(-1, keepdim=True)
    return x / (x.pow(2).mean(-1, keepdim=True) + eps).sqrt() * w + b


@torch.no_grad()
def forward(model, tokens, *, skip=(True,) * 64, skip_mean=None, pattern_edit=None,
            resid_edit=None):
    """Logits (B, T, V) of ``model`` on ``tokens``, written out by hand.

    skip[l] False: layer l outputs attn_out (+ skip_mean[l] if given; the mean over the batch and
    positions of its resid_pre when skip_mean[l] is True). pattern_edit(l, pattern) -> pattern.
    resid_edit(name, resid) -> resid at 'pre0' and 'post{l}'.
    """
    cfg = model.config
    L, T = cfg.task.list_len, tokens.shape[1]
    ok = allowed(L)[:T, :T]
    x = model.embed.W_E[tokens] + model.pos_embed.W_pos[:T]
    if resid_edit:
        x = resid_edit("pre0", x)
    for l, block in enumerate(model.blocks):
        a = block.attn
        h = layer_norm(x, block.ln1.w, block.ln1.b) if cfg.model.ln else x
        q = torch.einsum("btm,hmd->bhtd", h, a.W_Q) + a.b_Q[None, :, None]
        k = torch.einsum("btm,hmd->bhtd", h, a.W_K) + a.b_K[None, :, None]
        v = torch.einsum("btm,hmd->bhtd", h, a.W_V) + a.b_V[None, :, None]
        scores = (q @ k.transpose(-1, -2)) / math.sqrt(q.shape[-1])
        scores = scores.masked_fill(~ok, float("-inf"))
        pattern = scores.softmax(-1)
        if pattern_edit:
            pattern = pattern_edit(l, pattern)
        out = torch.einsum("bhtd,hdm->btm", pattern @ v, a.W_O) + a.b_O
        if skip[l]:
            x = out + x
        elif skip_mean is not None and skip_mean[l]:
            x = out + x.mean((0, 1))
        else:
            x = out
        if resid_edit:
            x = resid_edit(f"post{l}", x)
    if cfg.model.ln:
        x = layer_norm(x, model.ln_final.w, model.ln_final.b)
    return x @ model.unembed.W_U + model.unembed.b_U


def metrics(logits, targets, list_len):
    """The seed's loss / acc / seq_acc on the output positions."""
    out = slice(list_len + 1, 2 * list_len + 1)
    lo, tg = logits[:, out], targets[:, out]
    right = lo.argmax(-1) == tg
    loss = F.cross_entropy(lo.reshape(-1, lo.shape[-1]), tg.reshape(-1)).item()
    return {"loss": loss, "acc": right.float().mean().item(),
            "seq_acc": right.all(-1).float().mean().item()}


def no_hooks(model) -> bool:
    return all(not hp.fwd_hooks and not hp.bwd_hooks for hp in model.hook_dict.values())
