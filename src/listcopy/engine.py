"""The vectorised trainer's core: E models of one shape, stacked along a leading member dimension.

Every trainable parameter of every member lives in one flat tensor ``flat`` (E, P); each named
parameter is a view into it, so the AdamW step is a handful of elementwise ops over (E, P), which is
exactly E independent AdamW optimisers (AdamW is elementwise), each with its own lr, weight decay and
an ``active`` flag that freezes a member once it has stopped.

The forward pass here is the hooked model's math (model.py) fused for training: no hooks, frozen
identity W_V / W_O applied as slices instead of matmuls, the 5x5 attention written as broadcast
multiply + sum, and the unembedding only at the output positions. ``tests/test_engine.py`` holds its
logits and gradients equal to the hooked model's.

Shapes: E members, B batch, T positions, L list_len, H heads, D d_model, d d_head, V vocab,
P trainable parameters per member.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from .config import Config
from .model import ListCopyTransformer, build_model
from .task import attention_mask

BETAS = (0.9, 0.999)  # torch.optim.AdamW defaults, as the seed uses
EPS = 1e-8


@dataclass(frozen=True)
class Layout:
    """Where each trainable parameter sits in the flat (E, P) tensor, and what is frozen."""

    names: tuple[str, ...]  # state-dict names of the trainable parameters, in named_parameters order
    shapes: tuple[tuple[int, ...], ...]
    offsets: tuple[int, ...]
    frozen: tuple[str, ...]  # state-dict names of the frozen parameters

    @property
    def size(self) -> int:
        return self.offsets[-1] + math.prod(self.shapes[-1]) if self.names else 0

    @staticmethod
    def of(model: ListCopyTransformer) -> "Layout":
        names, shapes, offsets, frozen, offset = [], [], [], [], 0
        for name, param in model.named_parameters():
            if param.requires_grad:
                names.append(name)
                shapes.append(tuple(param.shape))
                offsets.append(offset)
                offset += param.numel()
            else:
                frozen.append(name)
        return Layout(tuple(names), tuple(shapes), tuple(offsets), tuple(frozen))


class Ensemble:
    """E models of one shape (one ``config.task`` and ``config.model``) and their AdamW state."""

    def __init__(self, config: Config, state_dicts: list[dict[str, Tensor]],
                 device: torch.device | str = "cpu"):
        self.config = config
        self.device = torch.device(device)
        self.template = ListCopyTransformer(config)  # names, buffers, trainable flags
        self.layout = Layout.of(self.template)
        E, P = len(state_dicts), self.layout.size
        flat = torch.empty(E, P)
        for i, sd in enumerate(state_dicts):
            for name, shape, off in zip(self.layout.names, self.layout.shapes, self.layout.offsets):
                flat[i, off: off + math.prod(shape)] = sd[name].reshape(-1)
        self.flat = flat.to(self.device).requires_grad_(True)
        self.frozen = {name: torch.stack([sd[name] for sd in state_dicts]).to(self.device)
                       for name in self.layout.frozen}
        self.exp_avg = torch.zeros(E, P, device=self.device)
        self.exp_avg_sq = torch.zeros(E, P, device=self.device)
        self.adam_step = 0
        self.mask = attention_mask(config.task.list_len).to(self.device)
        cfg = config.model
        self._identity_v = cfg.freeze_wv and all(_is_identity(sd, "W_V", cfg) for sd in state_dicts)
        self._identity_o = cfg.freeze_wo and all(_is_identity(sd, "W_O", cfg) for sd in state_dicts)
        self._bias = cfg.use_bias or any(
            bool(t.any()) for sd in state_dicts for n, t in sd.items() if ".b_" in n)

    @classmethod
    def init(cls, config: Config, generators: list[torch.Generator],
             device: torch.device | str = "cpu") -> "Ensemble":
        """New members, member i's weights drawn from ``generators[i]`` (see model.init_weights)."""
        sds = [build_model(config, g).state_dict() for g in generators]
        return cls(config, sds, device)

    @property
    def n_members(self) -> int:
        return self.flat.shape[0]

    # ---- parameters ---------------------------------------------------------------------------
    def params(self) -> dict[str, Tensor]:
        """Every parameter by state-dict name, (E, *shape): views of ``flat`` or frozen tensors."""
        out = dict(self.frozen)
        E = self.flat.shape[0]
        for name, shape, off in zip(self.layout.names, self.layout.shapes, self.layout.offsets):
            out[name] = self.flat[:, off: off + math.prod(shape)].view(E, *shape)
        return out

    def state_dict(self, member: int) -> dict[str, Tensor]:
        """Member ``member``'s weights as the hooked model's state dict (buffers included), on CPU."""
        params = self.params()
        sd = {}
        for name, value in self.template.state_dict().items():
            sd[name] = params[name][member].detach().cpu().clone() if name in params else value
        return sd

    def model(self, member: int) -> ListCopyTransformer:
        """A hooked model holding member ``member``'s weights, for analysis."""
        model = ListCopyTransformer(self.config)
        model.load_state_dict(self.state_dict(member))
        return model

    # ---- forward --------------------------------------------------------------------------------
    def output_logits(self, tokens: Tensor, params: dict[str, Tensor] | None = None) -> Tensor:
        """Logits at the output positions, (E, B, L, V), for tokens (B, T) shared or (E, B, T)."""
        p = self.params() if params is None else params
        cfg, L = self.config.model, self.config.task.list_len
        W_E = p["embed.W_E"]  # (E, V, D)
        E, V, D = W_E.shape
        H, d = cfg.n_heads, cfg.d_head
        if tokens.dim() == 2:
            x = W_E[:, tokens]  # (E, B, T, D)
        else:
            x = W_E.reshape(E * V, D)[tokens + V * torch.arange(E, device=tokens.device)[:, None, None]]
        x = x + p["pos_embed.W_pos"][:, None]
        B, T = x.shape[1], x.shape[2]
        for layer in range(cfg.n_layers):
            pre = f"blocks.{layer}."
            h = _layer_norm(x, p[pre + "ln1.w"], p[pre + "ln1.b"]) if cfg.ln else x
            q = _project(h, p[pre + "attn.W_Q"], p[pre + "attn.b_Q"], self._bias)  # (E,B,T,H,d)
            k = _project(h, p[pre + "attn.W_K"], p[pre + "attn.b_K"], self._bias)
            if self._identity_v:  # W_V = eye(D, d) for every head: v is the first d dims
                v = h[..., None, :d].expand(E, B, T, H, d)
                if self._bias:
                    v = v + p[pre + "attn.b_V"][:, None, None]
            else:
                v = _project(h, p[pre + "attn.W_V"], p[pre + "attn.b_V"], True)
            q, k, v = (t.transpose(2, 3) for t in (q, k, v))  # (E, B, H, T, d)
            scores = (q[..., :, None, :] * k[..., None, :, :]).sum(-1) / math.sqrt(d)  # (E,B,H,Q,K)
            pattern = torch.softmax(scores + self.mask[:T, :T], dim=-1)
            z = (pattern[..., None] * v[..., None, :, :]).sum(-2)  # (E, B, H, T, d)
            if self._identity_o:  # W_O = eye(d, D) for every head: heads summed into the first d dims
                out = z.sum(2)
                if d < D:
                    out = F.pad(out, (0, D - d))
            else:
                zz = z.transpose(2, 3).reshape(E, B * T, H * d)
                out = torch.bmm(zz, p[pre + "attn.W_O"].reshape(E, H * d, D)).view(E, B, T, D)
            if self._bias:
                out = out + p[pre + "attn.b_O"][:, None, None]
            x = out + x
        x = x[:, :, L + 1:]  # (E, B, L, D): only the outputs are unembedded
        if cfg.ln:
            x = _layer_norm(x, p["ln_final.w"], p["ln_final.b"])
        logits = torch.bmm(x.reshape(E, B * L, D), p["unembed.W_U"]).view(E, B, L, V)
        return logits + p["unembed.b_U"][:, None, None] if self._bias else logits

    def member_loss(self, tokens: Tensor, targets: Tensor) -> Tensor:
        """Per-member mean cross-entropy (E,) on output positions; targets (E, B, L) or (B, L)."""
        logits = self.output_logits(tokens)
        E, B, L, V = logits.shape
        targets = targets.expand(E, B, L)
        ce = F.cross_entropy(logits.reshape(-1, V), targets.reshape(-1), reduction="none")
        return ce.view(E, B * L).mean(1)

    # ---- optimisation ---------------------------------------------------------------------------
    def train_step(self, tokens: Tensor, targets: Tensor, lr: Tensor, weight_decay: Tensor,
                   active: Tensor) -> Tensor:
        """One AdamW step for every member; members with ``active`` False keep their weights.

        lr, weight_decay (E, 1) float; active (E, 1) bool. Returns the per-member loss (E,),
        detached and left on the device (no host sync).
        """
        loss = self.member_loss(tokens, targets)
        (grad,) = torch.autograd.grad(loss.sum(), self.flat)
        self.adam_step += 1
        with torch.no_grad():
            adamw_(self.flat, grad, self.exp_avg, self.exp_avg_sq, self.adam_step, lr,
                   weight_decay, active)
        return loss.detach()

    @torch.no_grad()
    def evaluate(self, inputs: Tensor, targets: Tensor, chunk: int | None = None) -> dict[str, Tensor]:
        """Validation metrics per member, each (E,): ``loss``, ``acc`` (per token), ``seq_acc``.

        inputs / targets (N, T) are shared by all members; evaluated in chunks of the N lists.
        """
        E, L = self.n_members, self.config.task.list_len
        out_targets = targets[:, L + 1:]
        chunk = chunk or max(1, (1 << 17) // E)
        loss = torch.zeros(E, device=self.device)
        hits = torch.zeros(E, device=self.device)
        seq_hits = torch.zeros(E, device=self.device)
        for start in range(0, inputs.shape[0], chunk):
            logits = self.output_logits(inputs[start: start + chunk])  # (E, b, L, V)
            tgt = out_targets[start: start + chunk]
            b = tgt.shape[0]
            ce = F.cross_entropy(logits.reshape(-1, logits.shape[-1]),
                                 tgt.expand(E, b, L).reshape(-1), reduction="none")
            loss += ce.view(E, b * L).sum(1)
            right = logits.argmax(-1) == tgt  # (E, b, L)
            hits += right.sum((1, 2))
            seq_hits += right.all(-1).sum(1)
        n = inputs.shape[0]
        return {"loss": loss / (n * L), "acc": hits / (n * L), "seq_acc": seq_hits / n}


def adamw_(param: Tensor, grad: Tensor, exp_avg: Tensor, exp_avg_sq: Tensor, step: int,
           lr: Tensor, weight_decay: Tensor, active: Tensor) -> None:
    """``torch.optim.AdamW`` (single-tensor algorithm, defaults) over (E, P), in place.

    Members with ``active`` False are left untouched (weights and moments).
    """
    beta1, beta2 = BETAS
    new_avg = exp_avg.lerp(grad, 1 - beta1)
    new_avg_sq = exp_avg_sq * beta2 + (1 - beta2) * grad * grad
    step_size = lr / (1 - beta1**step)
    denom = (new_avg_sq.sqrt() / math.sqrt(1 - beta2**step)).add_(EPS)
    new_param = param * (1 - lr * weight_decay) - step_size * new_avg / denom
    param.copy_(torch.where(active, new_param, param))
    exp_avg.copy_(torch.where(active, new_avg, exp_avg))
    exp_avg_sq.copy_(torch.where(active, new_avg_sq, exp_avg_sq))


def _project(h: Tensor, W: Tensor, b: Tensor, use_bias: bool) -> Tensor:
    """h (E, B, T, D) @ W (E, H, D, d) [+ b (E, H, d)] -> (E, B, T, H, d)."""
    E, B, T, D = h.shape
    H, d = W.shape[1], W.shape[3]
    out = torch.bmm(h.reshape(E, B * T, D), W.permute(0, 2, 1, 3).reshape(E, D, H * d))
    out = out.view(E, B, T, H, d)
    return out + b[:, None, None] if use_bias else out


def _layer_norm(x: Tensor, w: Tensor, b: Tensor) -> Tensor:
    """TransformerLens "LN" with per-member affine w, b (E, D); x (E, ..., D)."""
    x = x - x.mean(-1, keepdim=True)
    scale = (x.pow(2).mean(-1, keepdim=True) + 1e-5).sqrt()
    shape = (w.shape[0],) + (1,) * (x.dim() - 2) + (w.shape[1],)
    return x / scale * w.view(shape) + b.view(shape)


def _is_identity(sd: dict[str, Tensor], which: str, cfg) -> bool:
    H, D, d = cfg.n_heads, cfg.d_model, cfg.d_head
    eye = torch.eye(D, d) if which == "W_V" else torch.eye(d, D)
    return all(torch.equal(sd[f"blocks.{i}.attn.{which}"].cpu(), eye.expand(H, *eye.shape))
               for i in range(cfg.n_layers))
