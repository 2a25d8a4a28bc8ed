"""Edits of attention patterns as temporary hooks: set chosen weights (layer, query, key) to given
values at ``hook_pattern``, optionally renormalising the rows touched, and the edge-set syntax of
``listcopy ablate --edges``.

    >>> hooks = pattern_hooks({(0, 2, 0): 0.0, (0, 2, 1): 1.0})      # alpha_{s->d1}=0, alpha_{s->d2}=1
    >>> hooks = ablation_hooks(parse_edges("0:4-3,0-0;1:2-1", 2, 5), renorm=True)
    >>> with edited_patterns(model, {(1, 4, 3): 0.0}):                # attached for the block only
    ...     logits = model(tokens)

Renormalising divides each touched row by ``max(row sum, 1e-12)`` (the research line's
``make_pattern_hook``), so a row whose every weight was removed stays zero. Edits apply to every
head unless ``head`` is given.
"""

from __future__ import annotations

import contextlib
from typing import Iterable, Iterator, Mapping

import torch
from torch import Tensor

from ..config import ConfigError
from .common import FwdHook, hooked, pattern_name

RENORM_EPS = 1e-12  # the research line's eps

Edge = tuple[int, int, int]  # (layer, query, key)


def pattern_hooks(edits: Mapping[Edge, float], renorm: bool = False, head: int | None = None,
                  eps: float = RENORM_EPS) -> list[FwdHook]:
    """Hooks writing ``value`` at ``pattern[:, head or all, query, key]`` for each
    ``(layer, query, key): value``; with ``renorm``, each touched row is then divided by
    ``max(row sum, eps)``."""
    by_layer: dict[int, dict[tuple[int, int], float]] = {}
    for (layer, q, k), value in edits.items():
        by_layer.setdefault(layer, {})[(q, k)] = float(value)

    def make(cells: dict[tuple[int, int], float]):
        qs = torch.tensor([q for q, _ in cells])
        ks = torch.tensor([k for _, k in cells])
        values = torch.tensor(list(cells.values()))
        rows = torch.unique(qs)

        def hook(pattern: Tensor, hook) -> Tensor:  # (B, H, Q, K)
            pattern = pattern.clone()
            heads = slice(None) if head is None else slice(head, head + 1)
            p = pattern[:, heads]
            p[:, :, qs, ks] = values.to(p)
            if renorm:
                sub = p[:, :, rows]
                p[:, :, rows] = sub / sub.sum(-1, keepdim=True).clamp_min(eps)
            pattern[:, heads] = p
            return pattern
        return hook

    return [(pattern_name(layer), make(cells)) for layer, cells in sorted(by_layer.items())]


def ablation_hooks(edges: Iterable[Edge], renorm: bool = False,
                   head: int | None = None) -> list[FwdHook]:
    """Hooks zeroing each edge's weight (and renormalising the touched rows with ``renorm``)."""
    return pattern_hooks({tuple(e): 0.0 for e in edges}, renorm=renorm, head=head)


@contextlib.contextmanager
def edited_patterns(model, edits: Mapping[Edge, float], renorm: bool = False,
                    head: int | None = None) -> Iterator[None]:
    """``edits`` in effect on ``model`` for the block only (as TransformerLens' ``hooks()``)."""
    with hooked(model, pattern_hooks(edits, renorm, head)):
        yield


# ---- the edge-set syntax -----------------------------------------------------------------------

def parse_edges(text: str, n_layers: int, seq_len: int) -> list[Edge]:
    """``"0:4-3,0-0;1:2-1"`` -> ``[(0, 4, 3), (0, 0, 0), (1, 2, 1)]``: layers separated by ``;``,
    each ``LAYER:Q-K,Q-K,...`` (query and key positions by index). Bad text raises ConfigError."""
    edges: list[Edge] = []
    for part in (p.strip() for p in str(text).split(";")):
        if not part:
            continue
        layer_text, sep, pairs = part.partition(":")
        if not sep:
            raise ConfigError(f"edges {part!r}: expected LAYER:Q-K,Q-K,... (e.g. 0:4-3,0-0)")
        layer = _index(layer_text, n_layers, "layer", part)
        for pair in (p.strip() for p in pairs.split(",")):
            q_text, dash, k_text = pair.partition("-")
            if not dash:
                raise ConfigError(f"edges {part!r}: {pair!r} is not QUERY-KEY (e.g. 4-3)")
            edge = (layer, _index(q_text, seq_len, "query", part), _index(k_text, seq_len, "key", part))
            if edge not in edges:
                edges.append(edge)
    if not edges:
        raise ConfigError(f"edges {text!r}: no edge given (e.g. \"0:4-3,0-0;1:2-1\")")
    return edges


def _index(text: str, n: int, what: str, part: str) -> int:
    text = text.strip()
    if not text.isdigit() or int(text) >= n:
        raise ConfigError(f"edges {part!r}: {what} {text!r} must be an integer in 0 .. {n - 1}")
    return int(text)


def format_edges(edges: Iterable[Edge]) -> str:
    """The inverse of :func:`parse_edges`: ``"0:4-3,0-0;1:2-1"`` (layers in order)."""
    by_layer: dict[int, list[str]] = {}
    for layer, q, k in edges:
        by_layer.setdefault(layer, []).append(f"{q}-{k}")
    return ";".join(f"{layer}:{','.join(pairs)}" for layer, pairs in sorted(by_layer.items()))
