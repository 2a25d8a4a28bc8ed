"""The attention-only transformer of the seed: its modules, math, weights and initialisation.

Same math, parameter names, state dict and hook names as TransformerLens 3.x ``HookedTransformer``
with ``attn_only=True`` (the seed's model), with the seed's attention mask built in. Two classes
share it: :class:`ListCopyCore` has identity hook slots and imports nothing of TransformerLens
(training, evaluation, export and sweep workers use it: TransformerLens takes seconds to import);
``ListCopyTransformer`` (hooked.py, also importable from here) is the same model on
TransformerLens' ``HookedRootModule`` / ``HookPoint``, so that ``run_with_hooks``,
``run_with_cache`` and ``cache["pattern", 0]`` work as in the notebook. With
``model.layer0_mask`` layer 0 masks as the research line's hooks do (``task.layer_masks``): its
``hook_attn_scores`` shows the layer-0 mask added, its ``hook_pattern`` the outputs' rows zeroed.

Glossary of shapes
    B   batch                      T   positions, 2 * list_len + 1     V   vocabulary (task.vocab)
    D   d_model                    H   heads                           d   d_head = D // H
    Q/K query and key positions (both T)

Forward, for tokens (B, T):
    resid = W_E[tokens] + W_pos                                   hook_embed, hook_pos_embed
    per layer L:                                                  blocks.L.hook_resid_pre
        x      = LN(resid) if ln else resid                       blocks.L.ln1.hook_scale / hook_normalized
        q,k,v  = x @ W_Q + b_Q, x @ W_K + b_K, x @ W_V + b_V       attn.hook_q / hook_k / hook_v  (B,T,H,d)
        scores = q.k / sqrt(d), causal mask, + the layer's mask   attn.hook_attn_scores (B,H,Q,K)
        pattern = softmax(scores) (NaN -> 0), silent rows -> 0    attn.hook_pattern     (B,H,Q,K)
        z      = pattern @ v                                      attn.hook_z           (B,T,H,d)
        out    = z @ W_O + b_O                                    blocks.L.hook_attn_out (B,T,D)
        resid  = out + resid                                      blocks.L.hook_resid_post
    logits = LN_final(resid) @ W_U + b_U                          ln_final.* when ln    (B,T,V)

With ``freeze_wv`` / ``freeze_wo`` the value and output matrices are identity slices
(``eye(D, d)``, ``eye(d, D)`` per head) and frozen; without ``use_bias`` every ``b_*`` is zero and
frozen. Weights are initialised by :func:`init_weights` (TransformerLens' "gpt2" init, drawing from
a given generator in ``named_parameters()`` order); :class:`InitialState` draws the same values
as a state dict, without a module per member (how an ensemble's members start).
"""

from __future__ import annotations

import math
from types import SimpleNamespace

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .config import Config, ModelConfig
from .task import LayerMask, model_masks, seed_generator

LN_EPS = 1e-5  # TransformerLens' default cfg.eps


class LayerNorm(nn.Module):
    """TransformerLens "LN": centre, scale by sqrt(mean square + eps), then affine ``w``, ``b``."""

    def __init__(self, d_model: int, hook_point=nn.Identity):
        super().__init__()
        self.w = nn.Parameter(torch.ones(d_model))
        self.b = nn.Parameter(torch.zeros(d_model))
        self.hook_scale = hook_point()  # (B, T, 1)
        self.hook_normalized = hook_point()  # (B, T, D)

    def forward(self, x: Tensor) -> Tensor:
        x = x - x.mean(-1, keepdim=True)
        scale = self.hook_scale((x.pow(2).mean(-1, keepdim=True) + LN_EPS).sqrt())
        return self.hook_normalized(x / scale * self.w + self.b)


def is_saved_causal_mask(mask: object, n_ctx: int) -> bool:
    """Whether a saved ``attn.mask`` buffer is a causal mask this model accepts for ``n_ctx``
    positions: TransformerLens 2.x saves ``tril(n_ctx)`` (a larger one is cut to ``n_ctx``), 3.x an
    empty (0, 0) bool tensor. The one rule both loading and checkpoint checks follow."""
    if not isinstance(mask, Tensor) or mask.dtype != torch.bool or mask.dim() != 2:
        return False
    if mask.numel() == 0:
        return True
    causal = torch.tril(torch.ones(n_ctx, n_ctx, dtype=torch.bool, device=mask.device))
    return min(mask.shape) >= n_ctx and torch.equal(mask[:n_ctx, :n_ctx], causal)


class Attention(nn.Module):
    """One attention layer. Parameters are declared in TransformerLens' order (it fixes the init draws)."""

    def __init__(self, cfg: ModelConfig, n_ctx: int, masking: LayerMask, hook_point=nn.Identity):
        super().__init__()
        H, D, d = cfg.n_heads, cfg.d_model, cfg.d_head
        self.n_heads, self.d_head = H, d
        self.W_Q = nn.Parameter(torch.empty(H, D, d))
        self.W_O = nn.Parameter(torch.empty(H, d, D))
        self.b_Q = nn.Parameter(torch.zeros(H, d))
        self.b_O = nn.Parameter(torch.zeros(D))
        self.W_K = nn.Parameter(torch.empty(H, D, d))
        self.W_V = nn.Parameter(torch.empty(H, D, d))
        self.b_K = nn.Parameter(torch.zeros(H, d))
        self.b_V = nn.Parameter(torch.zeros(H, d))
        # TransformerLens' buffers, kept so the state dict matches the seed's.
        self.register_buffer("mask", torch.tril(torch.ones(n_ctx, n_ctx, dtype=torch.bool)))
        self.register_buffer("IGNORE", torch.tensor(-float("inf")))
        # The list mask (the notebook's perma-hook) and the rows whose pattern is zeroed (the
        # research line's layer-0 hook), built in; not part of the state dict.
        self.register_buffer("list_mask", masking.scores, persistent=False)
        self.register_buffer("silent_rows", masking.silent, persistent=False)
        self.has_silent = bool(masking.silent.any())
        self.hook_q = hook_point()  # (B, T, H, d)
        self.hook_k = hook_point()  # (B, T, H, d)
        self.hook_v = hook_point()  # (B, T, H, d)
        self.hook_attn_scores = hook_point()  # (B, H, Q, K)
        self.hook_pattern = hook_point()  # (B, H, Q, K)
        self.hook_z = hook_point()  # (B, T, H, d)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        """Accept both causal-mask buffers TransformerLens saves (see ``is_saved_causal_mask``)."""
        key = prefix + "mask"
        mask = state_dict.get(key)
        if mask is not None and is_saved_causal_mask(mask, self.mask.shape[0]):
            state_dict[key] = self.mask.clone()
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def forward(self, x: Tensor) -> Tensor:
        B, T, _ = x.shape
        q = self.hook_q(torch.einsum("btm,hmd->bthd", x, self.W_Q) + self.b_Q)
        k = self.hook_k(torch.einsum("btm,hmd->bthd", x, self.W_K) + self.b_K)
        v = self.hook_v(torch.einsum("btm,hmd->bthd", x, self.W_V) + self.b_V)
        scores = q.transpose(1, 2) @ k.permute(0, 2, 3, 1) / math.sqrt(self.d_head)  # (B,H,Q,K)
        scores = torch.where(self.mask[:T, :T], scores, self.IGNORE)
        scores = self.hook_attn_scores(scores + self.list_mask[:T, :T])
        pattern = F.softmax(scores, dim=-1)
        pattern = torch.where(pattern.isnan(), 0.0, pattern)
        if self.has_silent:
            pattern = pattern.masked_fill(self.silent_rows[:T, None], 0.0)
        pattern = self.hook_pattern(pattern)
        z = self.hook_z((pattern @ v.transpose(1, 2)).transpose(1, 2))  # (B, T, H, d)
        return z.reshape(B, T, -1) @ self.W_O.reshape(-1, self.W_O.shape[-1]) + self.b_O


class Block(nn.Module):
    """resid_post = attn(LN(resid_pre)) + resid_pre: no MLP."""

    def __init__(self, cfg: ModelConfig, n_ctx: int, masking: LayerMask, hook_point=nn.Identity):
        super().__init__()
        self.ln1 = LayerNorm(cfg.d_model, hook_point) if cfg.ln else nn.Identity()
        self.attn = Attention(cfg, n_ctx, masking, hook_point)
        self.hook_resid_pre = hook_point()  # (B, T, D)
        self.hook_attn_out = hook_point()  # (B, T, D)
        self.hook_resid_post = hook_point()  # (B, T, D)

    def forward(self, resid: Tensor) -> Tensor:
        resid = self.hook_resid_pre(resid)
        return self.hook_resid_post(self.hook_attn_out(self.attn(self.ln1(resid))) + resid)


class Embed(nn.Module):
    def __init__(self, d_vocab: int, d_model: int):
        super().__init__()
        self.W_E = nn.Parameter(torch.empty(d_vocab, d_model))

    def forward(self, tokens: Tensor) -> Tensor:
        return self.W_E[tokens]  # (B, T, D)


class PosEmbed(nn.Module):
    def __init__(self, n_ctx: int, d_model: int):
        super().__init__()
        self.W_pos = nn.Parameter(torch.empty(n_ctx, d_model))

    def forward(self, tokens: Tensor) -> Tensor:
        return self.W_pos[: tokens.shape[1]].expand(tokens.shape[0], -1, -1)  # (B, T, D)


class Unembed(nn.Module):
    def __init__(self, d_model: int, d_vocab: int):
        super().__init__()
        self.W_U = nn.Parameter(torch.empty(d_model, d_vocab))
        self.b_U = nn.Parameter(torch.zeros(d_vocab))

    def forward(self, resid: Tensor) -> Tensor:
        return resid @ self.W_U + self.b_U  # (B, T, V)


class ListCopyCore(nn.Module):
    """The seed's model (or the research line's variant). ``config`` is a full
    :class:`listcopy.Config` (task and model sections). Its ``hook_*`` slots are made by
    ``hook_point``: identities here, TransformerLens' ``HookPoint`` in ``ListCopyTransformer``."""

    def __init__(self, config: Config, hook_point=nn.Identity):
        super().__init__()
        self.config = config
        cfg, task = config.model, config.task
        self.embed = Embed(task.vocab, cfg.d_model)
        self.hook_embed = hook_point()  # (B, T, D)
        self.pos_embed = PosEmbed(task.seq_len, cfg.d_model)
        self.hook_pos_embed = hook_point()  # (B, T, D)
        self.blocks = nn.ModuleList(Block(cfg, task.seq_len, masking, hook_point)
                                    for masking in model_masks(config))
        self.ln_final = LayerNorm(cfg.d_model, hook_point) if cfg.ln else nn.Identity()
        self.unembed = Unembed(cfg.d_model, task.vocab)
        set_trainable(self)

    @property
    def cfg(self) -> SimpleNamespace:
        """The TransformerLens-style fields the seed's analyses read (``model.cfg.n_layers`` ...)."""
        m, t = self.config.model, self.config.task
        return SimpleNamespace(n_layers=m.n_layers, n_heads=m.n_heads, d_model=m.d_model,
                               d_head=m.d_head, n_ctx=t.seq_len, d_vocab=t.vocab,
                               d_vocab_out=t.vocab, attn_only=True,
                               normalization_type="LN" if m.ln else None, device=self.W_E.device)

    def forward(self, tokens: Tensor) -> Tensor:
        """tokens (B, T) int64 -> logits (B, T, V)."""
        resid = self.hook_embed(self.embed(tokens)) + self.hook_pos_embed(self.pos_embed(tokens))
        for block in self.blocks:
            resid = block(resid)
        return self.unembed(self.ln_final(resid))

    # TransformerLens-style shortcuts
    @property
    def W_E(self) -> Tensor:
        return self.embed.W_E

    @property
    def W_pos(self) -> Tensor:
        return self.pos_embed.W_pos

    @property
    def W_U(self) -> Tensor:
        return self.unembed.W_U

    @property
    def b_U(self) -> Tensor:
        return self.unembed.b_U


# ---- initialisation and the seed's constraints ------------------------------------------------

def set_trainable(model: ListCopyCore) -> None:
    """Freeze what the seed freezes: identity W_V / W_O, and every ``b_*`` without ``use_bias``."""
    cfg = model.config.model
    for name, param in model.named_parameters():
        leaf = name.rsplit(".", 1)[-1]
        frozen = ((leaf == "W_V" and cfg.freeze_wv) or (leaf == "W_O" and cfg.freeze_wo)
                  or (leaf.startswith("b_") and not cfg.use_bias))
        param.requires_grad_(not frozen)


def identity_weight(which: str, n_heads: int, d_model: int, d_head: int) -> Tensor:
    """The seed's frozen ``which``: W_V = eye(D, d) per head, (H, D, d); W_O = eye(d, D) per
    head, (H, d, D) (an expanded view: clone it to own it)."""
    eye = torch.eye(d_model, d_head) if which == "W_V" else torch.eye(d_head, d_model)
    return eye.expand(n_heads, *eye.shape)


class InitialState:
    """Draws a model's initial state dict: what :func:`init_weights` gives the model, without
    the model (the seed's values and order of draws; buffers copied from ``model``).

    TransformerLens' "gpt2" init: every parameter whose name contains ``W_`` gets
    Normal(0, 0.8 / sqrt(d_model)) in ``named_parameters()`` order, drawn on the CPU (so a given
    generator gives the same weights on every device); frozen W_V / W_O are identities (their
    draws still happen, as in the seed); biases are zero, LayerNorm weights one. Built once per
    shape, a draw costs one tensor per parameter (an ensemble's members are drawn this way).
    """

    def __init__(self, model: ListCopyCore):
        cfg = model.config.model
        params = dict(model.named_parameters())  # state_dict keeps their order, buffers between
        identity = {which: identity_weight(which, cfg.n_heads, cfg.d_model, cfg.d_head)
                    for which, frozen in (("W_V", cfg.freeze_wv), ("W_O", cfg.freeze_wo))
                    if frozen}
        self.std = cfg.init_std
        # (name, how, shape, fixed): a draw's fixed value replaces it (a frozen identity); a
        # buffer is copied from ``fixed``
        self.entries: list[tuple[str, str, tuple[int, ...], Tensor | None]] = []
        for name, value in model.state_dict().items():
            leaf = name.rsplit(".", 1)[-1]
            if name not in params:
                how, fixed = "copy", value.detach()
            elif "W_" in name:
                how, fixed = "draw", identity.get(leaf)
            else:
                how, fixed = ("zeros" if leaf.startswith("b_") or leaf == "b" else "ones"), None
            self.entries.append((name, how, tuple(value.shape), fixed))

    def draw(self, generator: torch.Generator) -> dict[str, Tensor]:
        """One model's initial state dict, its draws taken from ``generator``."""
        state = {}
        for name, how, shape, fixed in self.entries:
            if how == "draw":
                value = torch.empty(shape).normal_(0.0, self.std, generator=generator)
                state[name] = value if fixed is None else fixed.clone()
            elif how == "copy":
                state[name] = fixed.clone()
            else:
                state[name] = torch.zeros(shape) if how == "zeros" else torch.ones(shape)
        return state


@torch.no_grad()
def init_weights(model: ListCopyCore, generator: torch.Generator) -> None:
    """Set ``model``'s parameters to their initial values drawn from ``generator``
    (:class:`InitialState`: TransformerLens' "gpt2" init, then the seed's identities and zero
    biases)."""
    state = InitialState(model).draw(generator)
    for name, param in model.named_parameters():
        param.copy_(state[name])


def build_model(config: Config, generator: torch.Generator | None = None,
                device: torch.device | str = "cpu", *, hooks: bool = True) -> ListCopyCore:
    """A new model with weights drawn from ``generator``: a ``ListCopyTransformer`` (TransformerLens
    hooks), or with ``hooks=False`` a ``ListCopyCore`` (same weights, no TransformerLens import).

    By default the generator is the one the notebook has at ``make_model()`` under
    ``torch.manual_seed(config.train.seed)``: seeded, then used once for the split's randperm.
    """
    model = model_class(hooks)(config)
    init_weights(model, generator or seed_generator(config.task, config.train.seed))
    return model.to(device)


def with_weights(config: Config, state: dict[str, Tensor], hooks: bool = True) -> ListCopyCore:
    """A model of ``config`` holding ``state`` (cast to float32), in eval mode: hooked
    (TransformerLens) unless ``hooks`` is False. The state is not checked: see
    ``checkpoint.check_state_dict``."""
    model = model_class(hooks)(config)
    model.load_state_dict({k: v.to(torch.float32) if v.is_floating_point() else v
                           for k, v in state.items()})
    return model.eval()


def model_class(hooks: bool = True) -> type[ListCopyCore]:
    """``ListCopyTransformer`` (imports TransformerLens) or, without ``hooks``, ``ListCopyCore``."""
    if not hooks:
        return ListCopyCore
    from .hooked import ListCopyTransformer

    return ListCopyTransformer


def __getattr__(name: str):
    """``listcopy.model.ListCopyTransformer``, imported (with TransformerLens) on first use."""
    if name == "ListCopyTransformer":
        return model_class(hooks=True)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
