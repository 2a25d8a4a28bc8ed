"""Models built by hand, whose attention is known in closed form, and a research-like model: the
layer-0 rows of the output positions zeroed (the paper's mask: outputs receive nothing in layer 0)."""

from __future__ import annotations

import math

import torch

from listcopy import Config
from listcopy.model import build_model


def positional_model(overrides=(), g=(1.5, -0.5), scale=2.0, seed=0):
    """A model whose attention depends only on positions: coordinate 0 of the residual is a
    constant 1 and coordinate 1 a positional value g (W_E is zero there); the query reads
    coordinate 0 and the key coordinate 1, so at layer 0 the score of key k is
    ``scale * g[k] / sqrt(d_head)`` whatever the tokens. Returns (model, config, g_all)."""
    config = Config().override(["task.n_digits=6", "model.d_model=8", "model.n_layers=2",
                                *overrides])
    model = build_model(config, torch.Generator().manual_seed(seed)).eval()
    T = config.task.seq_len
    g_all = torch.zeros(T)
    g_all[: len(g)] = torch.tensor(g, dtype=torch.float32)
    with torch.no_grad():
        model.embed.W_E[:, :2] = 0.0
        model.pos_embed.W_pos[:, 0] = 1.0
        model.pos_embed.W_pos[:, 1] = g_all
        for block in model.blocks:
            block.attn.W_Q.zero_()
            block.attn.W_K.zero_()
            block.attn.W_Q[:, 0, 0] = scale
            block.attn.W_K[:, 1, 0] = 1.0
    return model, config, g_all


def layer0_weights(config, g_all, scale=2.0, query=None):
    """The closed-form layer-0 weights of :func:`positional_model` on the keys SEP attends."""
    L = config.task.list_len
    query = L if query is None else query
    keys = list(range(query))
    s = torch.tensor([scale * float(g_all[k]) / math.sqrt(config.model.d_head) for k in keys])
    return s.softmax(0)


def research_rows(config) -> dict:
    """Edits zeroing every layer-0 weight of the output positions (no renormalisation)."""
    L, T = config.task.list_len, config.task.seq_len
    return {(0, q, k): 0.0 for q in range(L + 1, T) for k in range(T)}
