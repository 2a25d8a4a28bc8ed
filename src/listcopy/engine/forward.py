"""The pruned torch forward: logits at the output positions of E models at once, differentiable.

The hooked model's math (model.py) fused for training: no hooks, frozen identity W_V / W_O applied
as slices instead of matmuls, only the rows an output depends on (plan.py), rows that are the same
for every example once per member, the unembedding only at the output positions. (In eager mode
batched matmuls beat broadcast multiply + sum for the 5x5 attention at every width measured, 8 to
128, except for the few rows and keys of the pruned groups: ``SMALL_ATTENTION``.)

Shapes: E members, B batch (B' = 1 for rows computed once), T positions, L list_len, H heads,
D d_model, d d_head, V vocab; ``p`` maps state-dict names to (E, *shape) parameters.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from ..config import Config
from .params import WeightFacts
from .plan import LayerPlan, Plan, Runs, make_plan, runs_of
from .rows import RowNeeds

SMALL_ATTENTION = 16  # query rows x keys up to which attention is multiply-and-sum, not matmuls
Pair = tuple[Tensor | None, Tensor | None]  # rows varying per example (E, B, n, ...), constant (E, 1, m, ...)


class PrunedForward:
    """Logits at the output positions for E members of one ``config``, given their parameters."""

    def __init__(self, config: Config, facts: WeightFacts, needs: RowNeeds, device: torch.device):
        self.config, self.facts, self.needs, self.device = config, facts, needs, device
        self._plans: dict[frozenset[int], Plan] = {}  # by const_positions

    def plan(self, const_positions: frozenset[int]) -> Plan:
        plan = self._plans.get(const_positions)
        if plan is None:
            plan = self._plans[const_positions] = make_plan(self.needs, const_positions, self.device)
        return plan

    @staticmethod
    def const_positions(tokens: Tensor) -> frozenset[int]:
        """Positions whose token is the same in every row of tokens (B, T) or (E, B, T) (each
        member's rows), where the residual stream starts the same for every example (one host
        sync). For the task's data: SEP and the output positions."""
        T = tokens.shape[-1]
        if tokens.shape[-2] == 0:
            return frozenset()
        same = (tokens == tokens[..., :1, :]).reshape(-1, T).all(0).tolist()
        return frozenset(i for i, s in enumerate(same) if s)

    def logits(self, p: dict[str, Tensor], tokens: Tensor,
               const_positions: frozenset[int] | None = None) -> Tensor:
        """(E, B, L, V) for tokens (B, T) shared by all members or (E, B, T) per member."""
        if const_positions is None:
            const_positions = self.const_positions(tokens)
        plan = self.plan(const_positions)
        first = plan.layers[0]
        x = (self._embed(p, tokens, first.in_var), self._embed(p, tokens[..., :1, :], first.in_const))
        for layer, lp in enumerate(plan.layers):
            x = self._layer(p, f"blocks.{layer}.", lp, x)
        return self._unembed(p, take(*x, plan.final), tokens.shape[-2])

    def member_loss(self, p: dict[str, Tensor], tokens: Tensor, targets: Tensor,
                    const_positions: frozenset[int] | None = None) -> Tensor:
        """Per-member mean cross-entropy (E,) on output positions; targets (E, B, L) or (B, L)."""
        logits = self.logits(p, tokens, const_positions)
        E, B, L, V = logits.shape
        targets = targets.expand(E, B, L)
        ce = F.cross_entropy(logits.reshape(-1, V), targets.reshape(-1), reduction="none")
        return ce.view(E, B * L).mean(1)

    def _embed(self, p: dict[str, Tensor], tokens: Tensor, rows: tuple[int, ...]) -> Tensor | None:
        """W_E[token] + W_pos at positions ``rows``: (E, B', len(rows), D)."""
        if not rows:
            return None
        W_E, W_pos = p["embed.W_E"], p["pos_embed.W_pos"]  # (E, V, D), (E, T, D)
        E, V, D = W_E.shape
        pick = _index(rows)
        t = tokens[..., pick]
        if tokens.dim() == 2:  # shared by every member
            x = W_E[:, t]
        else:
            member = torch.arange(E, device=tokens.device)[:, None, None]
            x = W_E.reshape(E * V, D)[t + V * member]
        return x + W_pos[:, pick][:, None]

    def _layer(self, p: dict[str, Tensor], pre: str, lp: LayerPlan, x: Pair) -> Pair:
        """One attention block from its input rows to its output rows (both as pairs)."""
        if self.config.model.ln:
            w, b = p[pre + "ln1.w"], p[pre + "ln1.b"]
            h = tuple(None if t is None else _layer_norm(t, w, b) for t in x)
        else:
            h = x
        q = self._project(p, pre, "Q", h, lp, (lp.q_var, lp.q_const))
        k = self._project(p, pre, "K", h, lp, (lp.k_var, lp.k_const))
        v = self._project(p, pre, "V", h, lp, (lp.v_var, lp.v_const))
        sqrt_d = math.sqrt(self.config.model.d_head)
        out = []
        for group, single, n_silent, resid in zip(lp.groups, lp.single, lp.silent, lp.resid):
            if resid is None:
                out.append(None)
                continue
            res = take(*x, resid)  # (E, B', rows, D)
            parts = []
            if group is not None:
                parts.append(attend(take(*q, group.q), take(*k, group.k), take(*v, group.v),
                                    group.mask, sqrt_d))  # (E, B', rows, H, d)
            if single is not None:  # one allowed key: the pattern is exactly 1 on it
                parts.append(take(*v, single))
            if n_silent:  # no key: the pattern row is zero, so z is
                H, d = self.config.model.n_heads, self.config.model.d_head
                parts.append(res.new_zeros(res.shape[0], res.shape[1], n_silent, H, d))
            out.append(self._mix_heads(p, pre, cat_rows(parts)) + res)
        return out[0], out[1]

    def _project(self, p: dict[str, Tensor], pre: str, which: str, h: Pair, lp: LayerPlan,
                 rows: tuple[tuple[int, ...], tuple[int, ...]]) -> Pair:
        """Queries, keys or values (E, B', n, H, d) of ``rows`` (varying, constant)."""
        W, bias = p[pre + "attn.W_" + which], p[pre + "attn.b_" + which]
        H, d = self.config.model.n_heads, self.config.model.d_head
        bias_on = self.facts.bias
        out = []
        for held, hh, want in ((lp.in_var, h[0], rows[0]), (lp.in_const, h[1], rows[1])):
            if not want:
                out.append(None)
                continue
            sel = take(hh, None, runs_of(want, held, ()))
            if which == "V" and self.facts.identity_v:  # W_V = eye(D, d) per head: first d dims
                val = sel[..., None, :d].expand(*sel.shape[:-1], H, d)
                out.append(val + bias[:, None, None] if bias_on else val)
            else:
                out.append(_project(sel, W, bias, bias_on or which == "V"))
        return out[0], out[1]

    def _mix_heads(self, p: dict[str, Tensor], pre: str, z: Tensor) -> Tensor:
        """z (E, B', n, H, d) through W_O (and b_O): (E, B', n, D)."""
        E, Bz, n, H, d = z.shape
        D = self.config.model.d_model
        if self.facts.identity_o:  # W_O = eye(d, D) per head: heads summed into the first d dims
            out = z.sum(3)
            if d < D:
                out = F.pad(out, (0, D - d))
        else:
            zz = z.reshape(E, Bz * n, H * d)
            out = torch.bmm(zz, p[pre + "attn.W_O"].reshape(E, H * d, D)).view(E, Bz, n, D)
        return out + p[pre + "attn.b_O"][:, None, None] if self.facts.bias else out

    def _unembed(self, p: dict[str, Tensor], x: Tensor, B: int) -> Tensor:
        """x (E, B', L, D) at the outputs (B' is 1 when they are constant) -> logits (E, B, L, V)."""
        if self.config.model.ln:
            x = _layer_norm(x, p["ln_final.w"], p["ln_final.b"])
        E, Bx, L, D = x.shape
        W_U = p["unembed.W_U"]
        V = W_U.shape[-1]
        logits = torch.bmm(x.reshape(E, Bx * L, D), W_U).view(E, Bx, L, V)
        if self.facts.bias:
            logits = logits + p["unembed.b_U"][:, None, None]
        return logits if Bx == B else logits.expand(E, B, L, V)


def take(var: Tensor | None, const: Tensor | None, runs: Runs) -> Tensor:
    """Rows of (var (E, B, n, ...), const (E, 1, m, ...)) by ``runs``, along dim 2; batch 1 when
    every picked row is constant, else B (constant rows broadcast)."""
    return cat_rows([(var, const)[src][:, :, a:b] for src, a, b in runs])


def cat_rows(parts: list[Tensor | None]) -> Tensor | None:
    """``parts`` (E, B or 1, n_i, ...) that are not None, joined along dim 2 (batch-1 parts
    broadcast to B); None when there are none."""
    parts = [p for p in parts if p is not None]
    if not parts:
        return None
    if len(parts) == 1:
        return parts[0]
    B = max(p.shape[1] for p in parts)
    return torch.cat([p.expand(p.shape[0], B, *p.shape[2:]) for p in parts], 2)


def attend(q: Tensor, k: Tensor, v: Tensor, mask: Tensor, sqrt_d: float) -> Tensor:
    """softmax(q.k / sqrt(d) + mask) @ v for q (E, B', n, H, d), k and v (E, B', m, H, d),
    mask (n, m): (E, B', n, H, d). A few rows and keys (the pruned groups): broadcast multiply
    and sum, which beats B * H tiny matrix products; many: batched matmuls."""
    if q.shape[2] * k.shape[2] <= SMALL_ATTENTION:
        scores = (q[:, :, :, None] * k[:, :, None]).sum(-1) / sqrt_d  # (E, B', n, m, H)
        pattern = torch.softmax(scores + mask[:, :, None], dim=3)
        return (pattern[..., None] * v[:, :, None]).sum(3)
    q, k, v = (t.transpose(2, 3) for t in (q, k, v))  # (E, B', H, n|m, d)
    pattern = torch.softmax(q @ k.transpose(-1, -2) / sqrt_d + mask, dim=-1)
    return (pattern @ v).transpose(2, 3)


def _index(rows: tuple[int, ...]) -> slice | list[int]:
    """Positions ``rows`` as a slice where they are consecutive (a view), else a list."""
    if rows == tuple(range(rows[0], rows[0] + len(rows))):
        return slice(rows[0], rows[0] + len(rows))
    return list(rows)


def _project(h: Tensor, W: Tensor, b: Tensor, use_bias: bool) -> Tensor:
    """h (E, B, T, D) @ W (E, H, D, d) [+ b (E, H, d)] -> (E, B, T, H, d)."""
    E, B, T, D = h.shape
    H, d = W.shape[1], W.shape[3]
    out = torch.bmm(h.reshape(E, B * T, D), W.permute(0, 2, 1, 3).reshape(E, D, H * d))
    out = out.view(E, B, T, H, d)
    return out + b[:, None, None] if use_bias else out


def _layer_norm(x: Tensor, w: Tensor, b: Tensor) -> Tensor:
    """TransformerLens "LN" with per-member affine w, b (E, D); x (E, ..., D).

    TL's centre-and-divide-by-sqrt(mean square + eps) is ``F.layer_norm`` without affine (one
    fused op forward and backward, equal up to rounding)."""
    shape = (w.shape[0],) + (1,) * (x.dim() - 2) + (w.shape[1],)
    return torch.addcmul(b.view(shape), F.layer_norm(x, x.shape[-1:], eps=1e-5), w.view(shape))
