"""The torch backend's pruned plan: which rows each layer computes, and which once per member.

:mod:`.rows` says which rows each layer needs. On top of it the torch forward also knows which
rows are the same for every example (positions whose token is, e.g. SEP and the outputs, and every
row that only attends to such rows): those are computed once per member and broadcast.

A row set of activations is held as two tensors: the rows that vary with the example
(E, B, n_var, ...) and the rows that are the same for every example of a member (E, 1, n_const,
...). A gather spec (``Runs``) picks rows, in a given order, out of such a pair: a tuple of runs
(source, start, stop), source 0 = varying, 1 = constant.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import torch
from torch import Tensor

from .rows import RowNeeds, Rows

Runs = tuple[tuple[int, int, int], ...]


@functools.lru_cache(maxsize=None)
def runs_of(rows: Rows, var_rows: Rows, const_rows: Rows) -> Runs:
    """Where ``rows`` sit in a (var_rows, const_rows) pair, as runs of consecutive rows."""
    where = {r: (0, i) for i, r in enumerate(var_rows)}
    where.update({r: (1, i) for i, r in enumerate(const_rows)})
    runs: list[list[int]] = []
    for r in rows:
        src, i = where[r]
        if runs and runs[-1][0] == src and runs[-1][2] == i:
            runs[-1][2] += 1
        else:
            runs.append([src, i, i + 1])
    return tuple(tuple(r) for r in runs)


@dataclass(frozen=True)
class Group:
    """Query rows attending to more than one key: their keys and the additive mask between them."""

    rows: Rows
    keys: Rows
    q: Runs  # the rows' queries, picked from the layer's (var, const) queries
    k: Runs  # the keys, from the layer's keys
    v: Runs  # the keys, from the layer's values
    mask: Tensor  # (len(rows), len(keys)): 0 allowed, -inf not


@dataclass(frozen=True)
class LayerPlan:
    in_var: Rows  # positions held at the layer's input, varying / constant
    in_const: Rows
    q_var: Rows  # positions (all held) that need a query, varying / constant
    q_const: Rows
    k_var: Rows
    k_const: Rows
    v_var: Rows
    v_const: Rows
    groups: tuple[Group | None, Group | None]  # multi-key rows with a varying / constant output
    single: tuple[Runs | None, Runs | None]  # single-key rows' values (pattern exactly 1), idem
    silent: tuple[int, int]  # how many rows have no key (they receive nothing), idem
    resid: tuple[Runs | None, Runs | None]  # the residual of the output rows, idem
    out_var: Rows  # positions held at the layer's output: groups' rows, single, then silent rows
    out_const: Rows


@dataclass(frozen=True)
class Plan:
    layers: tuple[LayerPlan, ...]
    final: Runs  # the output positions, in order, after the last layer


def make_plan(needs: RowNeeds, const0: frozenset[int], device: torch.device) -> Plan:
    """The pruned plan of ``needs``, forwards from the positions ``const0`` whose token is the
    same in every example."""
    held0 = needs.held[0]
    in_var = tuple(r for r in held0 if r not in const0)
    in_const = tuple(r for r in held0 if r in const0)
    layers = []
    for layer in range(needs.n_layers):
        lp = _layer_plan(needs, layer, in_var, in_const, device)
        layers.append(lp)
        in_var, in_const = lp.out_var, lp.out_const
    return Plan(tuple(layers), runs_of(needs.held[-1], in_var, in_const))


def _layer_plan(needs: RowNeeds, layer: int, in_var: Rows, in_const: Rows,
                device: torch.device) -> LayerPlan:
    keys, allowed = needs.keys[layer], needs.allowed[layer]
    rows = needs.out(layer)
    const = set(in_const)
    const_out = {r for r in rows if r in const and all(k in const for k in keys[r])}

    def split(s: Rows) -> tuple[Rows, Rows]:
        return tuple(r for r in in_var if r in s), tuple(r for r in in_const if r in s)

    (q_var, q_const), (k_var, k_const), (v_var, v_const) = map(
        split, (needs.attending(layer), needs.key_rows(layer), needs.value_rows(layer)))
    groups, singles, silent, resids, outs = [], [], [], [], []
    for is_const in (False, True):
        g_rows = tuple(r for r in needs.attending(layer) if (r in const_out) == is_const)
        s_rows = tuple(r for r in rows if len(keys[r]) == 1 and (r in const_out) == is_const)
        n_rows = tuple(r for r in rows if not keys[r] and (r in const_out) == is_const)
        group = None
        if g_rows:
            g_keys = tuple(sorted({k for r in g_rows for k in keys[r]}))
            mask = torch.tensor([[0.0 if allowed[r][k] else float("-inf") for k in g_keys]
                                 for r in g_rows], device=device)
            group = Group(g_rows, g_keys, runs_of(g_rows, q_var, q_const),
                          runs_of(g_keys, k_var, k_const), runs_of(g_keys, v_var, v_const), mask)
        groups.append(group)
        singles.append(runs_of(tuple(keys[r][0] for r in s_rows), v_var, v_const)
                       if s_rows else None)
        silent.append(len(n_rows))
        out = g_rows + s_rows + n_rows
        resids.append(runs_of(out, in_var, in_const) if out else None)
        outs.append(out)
    return LayerPlan(in_var, in_const, q_var, q_const, k_var, k_const, v_var, v_const,
                     tuple(groups), tuple(singles), (silent[0], silent[1]), tuple(resids), *outs)
