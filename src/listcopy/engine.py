"""The vectorised trainer's core: E models of one shape, stacked along a leading member dimension.

Every trainable parameter of every member lives in one flat tensor ``flat`` (E, P); each named
parameter is a view into it, so the AdamW step is a handful of elementwise ops over (E, P), which is
exactly E independent AdamW optimisers (AdamW is elementwise), each with its own lr, weight decay and
an ``active`` flag that freezes a member once it has stopped.

Two backends compute the same steps:

* ``kernel`` (CPU, the seed's default constraints: frozen identity W_V / W_O, no biases, no
  LayerNorm, d_model <= 32): a C kernel compiled for the exact shape (:mod:`listcopy.cpu_kernel`)
  runs forward, backward and AdamW of every active member for many steps per call. Stopped members
  cost nothing.
* ``torch`` (any configuration, any device): the hooked model's math (model.py) fused for training:
  no hooks, frozen identity W_V / W_O applied as slices instead of matmuls, the unembedding only
  at the output positions, autograd for the backward; stopped members are left out of each
  stretch of steps. (In eager mode batched matmuls beat broadcast multiply + sum for the 5x5
  attention at every width measured, 8 to 128.)

``tests/test_engine.py`` holds both backends' logits and gradients equal to the hooked model's.

Shapes: E members, B batch, T positions, L list_len, H heads, D d_model, d d_head, V vocab,
P trainable parameters per member, N rows of a data table.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from . import cpu_kernel
from .config import Config
from .model import ListCopyTransformer, build_model
from .task import attention_mask

BACKENDS = ("auto", "kernel", "torch")
BETAS = (0.9, 0.999)  # torch.optim.AdamW defaults, as the seed uses
EPS = 1e-8
SMALL_ATTENTION = 16  # query rows x keys up to which attention is multiply-and-sum, not matmuls


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
    """E models of one shape (one ``config.task`` and ``config.model``) and their AdamW state.

    ``backend``: "auto" (the C kernel where it applies and builds, else torch), "kernel" (raise if
    it does not apply) or "torch".
    """

    def __init__(self, config: Config, state_dicts: list[dict[str, Tensor]],
                 device: torch.device | str = "cpu", *, backend: str = "auto"):
        if backend not in BACKENDS:
            raise ValueError(f"backend {backend!r}: must be one of {', '.join(BACKENDS)}")
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
        self._plans: dict[frozenset[int], _Plan] = {}  # by const_positions
        cfg = config.model
        self._identity_v = cfg.freeze_wv and all(_is_identity(sd, "W_V", cfg) for sd in state_dicts)
        self._identity_o = cfg.freeze_wo and all(_is_identity(sd, "W_O", cfg) for sd in state_dicts)
        self._bias = cfg.use_bias or any(
            bool(t.any()) for sd in state_dicts for n, t in sd.items() if ".b_" in n)
        self.kernel: cpu_kernel.Kernel | None = None
        if backend != "torch":
            why = self._kernel_unfit()
            if why is None:
                self.kernel = cpu_kernel.load(self._kernel_shape())
                why = "it did not build" if self.kernel is None else None
            if why is not None and backend == "kernel":
                raise ValueError(f"the CPU kernel cannot train this ensemble: {why}")

    @classmethod
    def init(cls, config: Config, generators: list[torch.Generator],
             device: torch.device | str = "cpu", *, backend: str = "auto") -> "Ensemble":
        """New members, member i's weights drawn from ``generators[i]`` (see model.init_weights)."""
        sds = [build_model(config, g).state_dict() for g in generators]
        return cls(config, sds, device, backend=backend)

    @property
    def n_members(self) -> int:
        return self.flat.shape[0]

    @property
    def backend(self) -> str:
        return "kernel" if self.kernel is not None else "torch"

    def _kernel_unfit(self) -> str | None:
        """Why the C kernel cannot run this ensemble, or None."""
        cfg = self.config.model
        if self.device.type != "cpu":
            return f"device {self.device}"
        if cfg.ln or self._bias or not (self._identity_v and self._identity_o):
            return "it needs frozen identity W_V / W_O, no biases and no LayerNorm"
        if cfg.d_model > cpu_kernel.MAX_D_MODEL:
            return f"d_model > {cpu_kernel.MAX_D_MODEL}"
        return None

    def _kernel_shape(self) -> cpu_kernel.KernelShape:
        task, cfg = self.config.task, self.config.model
        T = task.seq_len
        allowed = (self.mask.cpu() == 0) & torch.tril(torch.ones(T, T, dtype=torch.bool))
        return cpu_kernel.KernelShape(
            T=T, L=task.list_len, D=cfg.d_model, H=cfg.n_heads, V=task.vocab, NL=cfg.n_layers,
            offsets=tuple(zip(self.layout.names, self.layout.offsets)), P=self.layout.size,
            allow=tuple(tuple(int(x) for x in row) for row in allowed.tolist()))

    # ---- parameters ---------------------------------------------------------------------------
    def params(self) -> dict[str, Tensor]:
        """Every parameter by state-dict name, (E, *shape): views of ``flat`` or frozen tensors."""
        return self._params(self.flat, self.frozen)

    def _params(self, flat: Tensor, frozen: dict[str, Tensor]) -> dict[str, Tensor]:
        out = dict(frozen)
        E = flat.shape[0]
        for name, shape, off in zip(self.layout.names, self.layout.shapes, self.layout.offsets):
            out[name] = flat[:, off: off + math.prod(shape)].view(E, *shape)
        return out

    def state_dict(self, member: int) -> dict[str, Tensor]:
        """Member ``member``'s weights as the hooked model's state dict (buffers included), on CPU."""
        return self.state_dicts([member])[0]

    def state_dicts(self, members: Sequence[int]) -> list[dict[str, Tensor]]:
        """:meth:`state_dict` of each of ``members``, copied to the host at once (not per tensor)."""
        if not members:
            return []
        idx = torch.tensor(list(members), device=self.device)
        flat = self.flat.detach()[idx].cpu()
        frozen = {k: v[idx].cpu() for k, v in self.frozen.items()}
        params = self._params(flat, frozen)
        template = self.template.state_dict()
        return [{name: params[name][j].clone() if name in params else value
                 for name, value in template.items()} for j in range(len(members))]

    def model(self, member: int) -> ListCopyTransformer:
        """A hooked model holding member ``member``'s weights, for analysis."""
        model = ListCopyTransformer(self.config)
        model.load_state_dict(self.state_dict(member))
        return model

    # ---- forward --------------------------------------------------------------------------------
    def output_logits(self, tokens: Tensor, params: dict[str, Tensor] | None = None, *,
                      const_positions: frozenset[int] | None = None) -> Tensor:
        """Logits at the output positions, (E, B, L, V), for tokens (B, T) shared or (E, B, T).

        Differentiable (torch ops, any backend); :meth:`predict` is the fast no-grad version.
        Only the rows the output positions depend on are computed (see :func:`_make_plan`), and
        rows that are the same for every example (``const_positions``: positions whose token is
        the same in every row of ``tokens``; found from ``tokens`` when None) once per member.
        """
        p = self.params() if params is None else params
        cfg = self.config.model
        W_E, W_pos = p["embed.W_E"], p["pos_embed.W_pos"]  # (E, V, D), (E, T, D)
        E, V, D = W_E.shape
        H, d = cfg.n_heads, cfg.d_head
        B = tokens.shape[-2]
        if const_positions is None:
            const_positions = self.const_positions(tokens)
        plan = self._plan(const_positions)
        member = None if tokens.dim() == 2 else torch.arange(E, device=tokens.device)[:, None, None]

        def embed(tok: Tensor, rows: tuple[int, ...]) -> Tensor | None:  # tok (B', T) or (E, B', T)
            if not rows:
                return None
            pick = _index(rows)
            t = tok[..., pick]
            x = W_E[:, t] if member is None else W_E.reshape(E * V, D)[t + V * member]
            return x + W_pos[:, pick][:, None]

        first = plan.layers[0]
        xv, xc = embed(tokens, first.in_var), embed(tokens[..., :1, :], first.in_const)
        sqrt_d = math.sqrt(d)
        for layer, lp in enumerate(plan.layers):
            pre = f"blocks.{layer}."
            if cfg.ln:
                w, b = p[pre + "ln1.w"], p[pre + "ln1.b"]
                hv = None if xv is None else _layer_norm(xv, w, b)
                hc = None if xc is None else _layer_norm(xc, w, b)
            else:
                hv, hc = xv, xc

            def proj(which: str, rows_v: tuple[int, ...], rows_c: tuple[int, ...]):
                W, bias = p[pre + "attn.W_" + which], p[pre + "attn.b_" + which]
                out = []
                for h, held, rows in ((hv, lp.in_var, rows_v), (hc, lp.in_const, rows_c)):
                    if not rows:
                        out.append(None)
                        continue
                    h = _take(h, None, _runs(rows, held, ()))
                    if which == "V" and self._identity_v:  # W_V = eye(D, d) per head: first d dims
                        v = h[..., None, :d].expand(*h.shape[:-1], H, d)
                        out.append(v + bias[:, None, None] if self._bias else v)
                    else:
                        out.append(_project(h, W, bias, self._bias or which == "V"))
                return out

            qv, qc = proj("Q", lp.q_var, lp.q_const)
            kv, kc = proj("K", lp.k_var, lp.k_const)
            vv, vc = proj("V", lp.v_var, lp.v_const)
            new = []
            for group, single, resid in zip(lp.groups, lp.single, lp.resid):
                parts = []
                if group is not None:
                    q, k, v = (_take(a, c, runs) for a, c, runs in
                               ((qv, qc, group.q), (kv, kc, group.k), (vv, vc, group.v)))
                    parts.append(_attend(q, k, v, group.mask, sqrt_d))  # (E, B', rows, H, d)
                if single is not None:  # one allowed key: the pattern is exactly 1 on it
                    parts.append(_take(vv, vc, single))
                z = _cat_rows(parts)
                if z is None:
                    new.append(None)
                    continue
                Bz, n = z.shape[1], z.shape[2]
                if self._identity_o:  # W_O = eye(d, D) per head: heads summed into the first d dims
                    out = z.sum(3)
                    if d < D:
                        out = F.pad(out, (0, D - d))
                else:
                    zz = z.reshape(E, Bz * n, H * d)
                    out = torch.bmm(zz, p[pre + "attn.W_O"].reshape(E, H * d, D)).view(E, Bz, n, D)
                if self._bias:
                    out = out + p[pre + "attn.b_O"][:, None, None]
                new.append(out + _take(xv, xc, resid))
            xv, xc = new
        x = _take(xv, xc, plan.final)  # (E, B', L, D): B' is 1 when the outputs are constant
        if cfg.ln:
            x = _layer_norm(x, p["ln_final.w"], p["ln_final.b"])
        Bx, L = x.shape[1], x.shape[2]
        logits = torch.bmm(x.reshape(E, Bx * L, D), p["unembed.W_U"]).view(E, Bx, L, V)
        if self._bias:
            logits = logits + p["unembed.b_U"][:, None, None]
        return logits if Bx == B else logits.expand(E, B, L, V)

    def const_positions(self, tokens: Tensor) -> frozenset[int]:
        """Positions whose token is the same in every row of tokens (B, T) or (E, B, T) (each
        member's rows), where the residual stream starts the same for every example (one host
        sync). For the task's data: SEP and the output positions."""
        T = tokens.shape[-1]
        if tokens.shape[-2] == 0:
            return frozenset()
        same = (tokens == tokens[..., :1, :]).reshape(-1, T).all(0).tolist()
        return frozenset(i for i, s in enumerate(same) if s)

    def _plan(self, const_positions: frozenset[int]) -> "_Plan":
        plan = self._plans.get(const_positions)
        if plan is None:
            L, T = self.config.task.list_len, self.config.task.seq_len
            allowed = ((self.mask.cpu() == 0) & torch.tril(torch.ones(T, T, dtype=torch.bool)))
            plan = _make_plan(allowed.tolist(), tuple(range(L + 1, T)), self.config.model.n_layers,
                              const_positions, self.device)
            self._plans[const_positions] = plan
        return plan

    @torch.no_grad()
    def predict(self, inputs: Tensor) -> Tensor:
        """Logits at the output positions, (E, N, L, V), for inputs (N, T) shared by all members."""
        if self.kernel is None:
            return self.output_logits(inputs)
        E, N, L = self.n_members, inputs.shape[0], self.config.task.list_len
        tokens = self._tokens(inputs)
        logits = torch.empty(E, N, L, self.config.task.vocab)
        stats = [torch.zeros(E, dtype=torch.float64), torch.zeros(E, dtype=torch.int64),
                 torch.zeros(E, dtype=torch.int64)]
        self.kernel.evaluate(self._theta(), None, tokens, torch.zeros(N, L, dtype=torch.int64),
                             *stats, logits=logits, n_threads=torch.get_num_threads())
        return logits

    def member_loss(self, tokens: Tensor, targets: Tensor, params: dict[str, Tensor] | None = None,
                    *, const_positions: frozenset[int] | None = None) -> Tensor:
        """Per-member mean cross-entropy (E,) on output positions; targets (E, B, L) or (B, L)."""
        logits = self.output_logits(tokens, params, const_positions=const_positions)
        E, B, L, V = logits.shape
        targets = targets.expand(E, B, L)
        ce = F.cross_entropy(logits.reshape(-1, V), targets.reshape(-1), reduction="none")
        return ce.view(E, B * L).mean(1)

    def loss_and_grad(self, tokens: Tensor, targets: Tensor) -> tuple[Tensor, Tensor]:
        """Per-member mean loss (E,) and its gradient w.r.t. ``flat`` (E, P), with this backend."""
        if self.kernel is None:
            return self._torch_loss_and_grad(tokens, targets, None)
        table, out_targets, rows = self._per_member_rows(tokens, targets)
        E = self.n_members
        loss = torch.zeros(E, dtype=torch.float64)
        grad = torch.zeros(E, self.layout.size)
        self.kernel.grad(self._theta(), table, out_targets, rows, loss, grad,
                         n_threads=torch.get_num_threads())
        return loss.float(), grad

    # ---- optimisation ---------------------------------------------------------------------------
    def train_step(self, tokens: Tensor, targets: Tensor, lr: Tensor, weight_decay: Tensor,
                   active: Tensor | None, *, const_positions: frozenset[int] | None = None) -> Tensor:
        """One AdamW step for every member; members with ``active`` False keep their weights.

        tokens (E, B, T) or (B, T), targets (E, B, L) or (B, L) at the output positions;
        lr, weight_decay (E,) or (E, 1) float; active (E,) or (E, 1) bool, or None: every member.
        Returns the per-member loss (E,), detached and left on the device (no host sync).
        """
        if self.kernel is not None:
            if active is None:
                active = torch.ones(self.n_members, dtype=torch.bool)
            table, out_targets, rows = self._per_member_rows(tokens, targets)
            loss = torch.zeros(self.n_members, dtype=torch.float64)
            self._kernel_train(table, out_targets, rows[:, None], 0, 1, lr, weight_decay, active, loss)
            return loss.float()
        loss, grad = self._torch_loss_and_grad(tokens, targets, const_positions)
        self.adam_step += 1
        with torch.no_grad():
            adamw_(self.flat, grad, self.exp_avg, self.exp_avg_sq, self.adam_step,
                   lr.reshape(-1, 1).to(grad.dtype), weight_decay.reshape(-1, 1).to(grad.dtype),
                   None if active is None else active.reshape(-1, 1))
        return loss

    def _torch_loss_and_grad(self, tokens: Tensor, targets: Tensor,
                             const_positions: frozenset[int] | None) -> tuple[Tensor, Tensor]:
        """Autograd with one leaf per parameter (views of ``flat``), the gradients concatenated:
        differentiating through slices of ``flat`` would add up a zero-filled (E, P) tensor per
        parameter."""
        E, flat = self.n_members, self.flat.detach()
        leaves = [flat[:, off: off + math.prod(shape)].view(E, *shape).requires_grad_(True)
                  for shape, off in zip(self.layout.shapes, self.layout.offsets)]
        params = dict(self.frozen)
        params.update(zip(self.layout.names, leaves))
        loss = self.member_loss(tokens, targets, params, const_positions=const_positions)
        grads = torch.autograd.grad(loss.sum(), leaves, allow_unused=True)
        grad = torch.cat([torch.zeros(E, leaf[0].numel(), device=flat.device) if g is None
                          else g.reshape(E, -1) for g, leaf in zip(grads, leaves)], 1)
        return loss.detach(), grad

    def train_steps(self, inputs: Tensor, targets: Tensor, batches: Tensor, batch0: int,
                    n_steps: int, lr: Tensor, weight_decay: Tensor, active: Tensor,
                    loss_sum: Tensor) -> None:
        """``n_steps`` AdamW steps; member e's step s trains on the rows
        ``batches[e, (batch0 + s) % n_batches]`` of ``inputs`` (N, T) / ``targets`` (N, L).

        batches (E, n_batches, B) int64; lr, weight_decay (E,) float (float64 keeps the exact
        hyperparameters for the kernel; torch uses the parameters' dtype); active (E,) bool (stopped
        members neither change nor cost time). Each step's per-member mean loss is added into
        ``loss_sum`` (E,) (float64; the kernel needs it). No host sync inside (the kernel runs all
        steps in one call; torch gathers the active members once per call).
        """
        if self.kernel is not None:
            self._kernel_train(inputs, targets, batches, batch0, n_steps, lr, weight_decay, active,
                               loss_sum)
            return
        n_batches = batches.shape[1]
        idx = active.reshape(-1).nonzero().flatten()  # one host sync per stretch of steps
        if idx.numel() == 0:
            self.adam_step += n_steps
            return
        every = idx.numel() == self.n_members
        sub = self if every else self._subset(idx)
        lr = lr.reshape(-1, 1)[idx].to(self.flat.dtype)
        wd = weight_decay.reshape(-1, 1)[idx].to(self.flat.dtype)
        bsub = batches[idx]
        total = torch.zeros(idx.numel(), dtype=loss_sum.dtype, device=self.device)
        const = self.const_positions(inputs)  # any batch of these rows shares them
        for s in range(n_steps):
            rows = bsub[:, (batch0 + s) % n_batches]  # (E', B)
            total += sub.train_step(inputs[rows], targets[rows], lr, wd, None,
                                    const_positions=const)
        if not every:
            with torch.no_grad():
                self.flat[idx] = sub.flat
                self.exp_avg[idx] = sub.exp_avg
                self.exp_avg_sq[idx] = sub.exp_avg_sq
            self.adam_step = sub.adam_step
        loss_sum[idx] += total

    def _subset(self, idx: Tensor) -> "Ensemble":
        """The members ``idx`` as a torch-backend ensemble of copies (moments and step included)."""
        sub = object.__new__(Ensemble)
        sub.__dict__.update(self.__dict__)
        sub.flat = self.flat.detach()[idx].requires_grad_(True)
        sub.frozen = {k: v[idx] for k, v in self.frozen.items()}
        sub.exp_avg, sub.exp_avg_sq = self.exp_avg[idx], self.exp_avg_sq[idx]
        sub.kernel = None
        return sub

    def _kernel_train(self, inputs: Tensor, targets: Tensor, batches: Tensor, batch0: int,
                      n_steps: int, lr: Tensor, weight_decay: Tensor, active: Tensor,
                      loss_sum: Tensor) -> None:
        assert self.kernel is not None
        E, n_batches, _ = batches.shape
        if E != self.n_members:
            raise ValueError(f"batches for {E} members, the ensemble has {self.n_members}")
        tokens, out_targets = self._tokens(inputs), self._targets(targets)
        rows = batches.contiguous()
        if rows.dtype != torch.int64 or rows.min() < 0 or rows.max() >= tokens.shape[0]:
            raise ValueError("batch rows must be int64 indices into the data table")
        if loss_sum.dtype != torch.float64 or not loss_sum.is_contiguous():
            raise ValueError("loss_sum must be a contiguous float64 tensor")
        on = active.reshape(-1).to(torch.uint8).contiguous()
        self.kernel.train(self._theta(), self.exp_avg, self.exp_avg_sq,
                          _f64(lr), _f64(weight_decay), on,
                          tokens, out_targets, rows, batch0 % n_batches, n_steps, self.adam_step,
                          loss_sum, n_threads=torch.get_num_threads())
        self.adam_step += n_steps

    def _theta(self) -> Tensor:
        """``flat`` for the kernel, which writes through raw pointers: check what it relies on."""
        shape = (self.n_members, self.layout.size)
        for t in (self.flat, self.exp_avg, self.exp_avg_sq):
            if (t.shape != shape or t.dtype != torch.float32 or t.device.type != "cpu"
                    or not t.is_contiguous()):
                raise ValueError(f"parameters and moments must be contiguous float32 CPU {shape}")
        return self.flat.detach()

    def _tokens(self, inputs: Tensor) -> Tensor:
        tokens = inputs.to(torch.int64).contiguous()
        V = self.config.task.vocab
        if tokens.dim() != 2 or tokens.shape[1] != self.config.task.seq_len:
            raise ValueError(f"inputs must be (N, {self.config.task.seq_len}), "
                             f"got {tuple(tokens.shape)}")
        if tokens.numel() and (tokens.min() < 0 or tokens.max() >= V):
            raise ValueError(f"tokens must be in [0, {V})")
        return tokens

    def _targets(self, targets: Tensor) -> Tensor:
        out = targets.to(torch.int64).contiguous()
        V, L = self.config.task.vocab, self.config.task.list_len
        if out.dim() != 2 or out.shape[1] != L:
            raise ValueError(f"targets must be (N, {L}) at the output positions, "
                             f"got {tuple(out.shape)}")
        if out.numel() and (out.min() < 0 or out.max() >= V):
            raise ValueError(f"targets must be in [0, {V})")
        return out

    def _per_member_rows(self, tokens: Tensor, targets: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """(E, B, T) or shared (B, T) tokens as a table of E * B rows and each member's rows."""
        E, L = self.n_members, self.config.task.list_len
        B = tokens.shape[-2]
        tokens = tokens.expand(E, B, tokens.shape[-1]).reshape(E * B, -1)
        targets = targets.expand(E, B, L).reshape(E * B, L)
        rows = torch.arange(E * B).view(E, B)
        return self._tokens(tokens), self._targets(targets), rows

    @torch.no_grad()
    def evaluate(self, inputs: Tensor, targets: Tensor, chunk: int | None = None,
                 active: Tensor | None = None) -> dict[str, Tensor]:
        """Validation metrics per member, each (E,): ``loss``, ``acc`` (per token), ``seq_acc``.

        inputs / targets (N, T) are shared by all members. With ``active`` (E,) bool, only those
        members are evaluated (the others get NaN). Torch backend: in chunks of the N lists.
        """
        E, L = self.n_members, self.config.task.list_len
        n = inputs.shape[0]
        out_targets = targets[:, L + 1:]
        if self.kernel is not None:
            loss = torch.zeros(E, dtype=torch.float64)
            hits = torch.zeros(E, dtype=torch.int64)
            seq_hits = torch.zeros(E, dtype=torch.int64)
            on = None if active is None else active.reshape(-1).to(torch.uint8).contiguous()
            self.kernel.evaluate(self._theta(), on, self._tokens(inputs),
                                 self._targets(out_targets), loss, hits, seq_hits,
                                 n_threads=torch.get_num_threads())
            out = {"loss": (loss / (n * L)).float(), "acc": hits.float() / (n * L),
                   "seq_acc": seq_hits.float() / n}
        else:
            idx = None if active is None else active.reshape(-1).nonzero().flatten()
            sub = self if idx is None or idx.numel() == E else self._subset(idx)
            out = sub._evaluate_torch(inputs, out_targets, chunk)
            if sub is not self:
                full = {k: torch.full((E,), float("nan"), device=self.device) for k in out}
                for k in out:
                    full[k][idx] = out[k]
                out = full
        if active is not None and self.kernel is not None:
            off = ~active.reshape(-1).bool().cpu()
            for v in out.values():
                v[off] = float("nan")
        return out

    def _evaluate_torch(self, inputs: Tensor, out_targets: Tensor,
                        chunk: int | None) -> dict[str, Tensor]:
        E, L = self.n_members, self.config.task.list_len
        chunk = chunk or max(1, (1 << 17) // max(E, 1))
        loss = torch.zeros(E, device=self.device)
        hits = torch.zeros(E, device=self.device)
        seq_hits = torch.zeros(E, device=self.device)
        params = {k: v.detach() for k, v in self.params().items()}
        const = self.const_positions(inputs)
        for start in range(0, inputs.shape[0], chunk):
            logits = self.output_logits(inputs[start: start + chunk], params,
                                        const_positions=const)  # (E, b, L, V)
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


# ---- the pruned forward: which rows each layer computes ---------------------------------------
# A row set of activations is held as two tensors: the rows that vary with the example
# (E, B, n_var, ...) and the rows that are the same for every example of a member (E, 1, n_const,
# ...), computed once and broadcast. A gather spec picks rows, in a given order, out of such a pair:
# a tuple of runs (source, start, stop), source 0 = varying, 1 = constant.

Runs = tuple[tuple[int, int, int], ...]


@functools.lru_cache(maxsize=None)
def _runs(rows: tuple[int, ...], var_rows: tuple[int, ...], const_rows: tuple[int, ...]) -> Runs:
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


def _take(var: Tensor | None, const: Tensor | None, runs: Runs) -> Tensor:
    """Rows of (var (E, B, n, ...), const (E, 1, m, ...)) by ``runs``, along dim 2; batch 1 when
    every picked row is constant, else B (constant rows broadcast)."""
    return _cat_rows([(var, const)[src][:, :, a:b] for src, a, b in runs])


def _cat_rows(parts: list[Tensor | None]) -> Tensor | None:
    """``parts`` (E, B or 1, n_i, ...) that are not None, joined along dim 2 (batch-1 parts
    broadcast to B); None when there are none."""
    parts = [p for p in parts if p is not None]
    if not parts:
        return None
    if len(parts) == 1:
        return parts[0]
    B = max(p.shape[1] for p in parts)
    return torch.cat([p.expand(p.shape[0], B, *p.shape[2:]) for p in parts], 2)


@dataclass(frozen=True)
class _Group:
    """Query rows attending to more than one key: their keys and the additive mask between them."""

    rows: tuple[int, ...]
    keys: tuple[int, ...]
    q: Runs  # the rows' queries, picked from the layer's (var, const) queries
    k: Runs  # the keys, from the layer's keys
    v: Runs  # the keys, from the layer's values
    mask: Tensor  # (len(rows), len(keys)): 0 allowed, -inf not


@dataclass(frozen=True)
class _LayerPlan:
    in_var: tuple[int, ...]  # positions held at the layer's input, varying / constant
    in_const: tuple[int, ...]
    q_var: tuple[int, ...]  # positions (all held) that need a query, varying / constant
    q_const: tuple[int, ...]
    k_var: tuple[int, ...]
    k_const: tuple[int, ...]
    v_var: tuple[int, ...]
    v_const: tuple[int, ...]
    groups: tuple[_Group | None, _Group | None]  # multi-key rows with a varying / constant output
    single: tuple[Runs | None, Runs | None]  # single-key rows' values (pattern exactly 1), idem
    resid: tuple[Runs | None, Runs | None]  # the residual of the output rows, idem
    out_var: tuple[int, ...]  # positions held at the layer's output: groups' rows then single rows
    out_const: tuple[int, ...]


@dataclass(frozen=True)
class _Plan:
    layers: tuple[_LayerPlan, ...]
    final: Runs  # the output positions, in order, after the last layer


def _make_plan(allowed: list[list[bool]], out_rows: tuple[int, ...], n_layers: int,
               const0: frozenset[int], device: torch.device) -> _Plan:
    """Which rows each layer needs (backwards from the output rows), which of them are the same
    for every example (forwards from the positions ``const0`` whose token is), from the mask."""
    T = len(allowed)
    keys = [tuple(j for j in range(T) if allowed[r][j]) for r in range(T)]
    need_out: list[tuple[int, ...]] = [()] * n_layers
    need_in: list[tuple[int, ...]] = [()] * n_layers
    need_out[-1] = tuple(out_rows)
    for layer in reversed(range(n_layers)):
        rows = set(need_out[layer]) | {k for r in need_out[layer] for k in keys[r]}
        need_in[layer] = tuple(sorted(rows))
        if layer:
            need_out[layer - 1] = need_in[layer]
    layers = []
    const = set(const0)
    in_var = tuple(r for r in need_in[0] if r not in const)
    in_const = tuple(r for r in need_in[0] if r in const)
    for layer in range(n_layers):
        rows = need_out[layer]
        const_out = {r for r in rows if r in const and all(k in const for k in keys[r])}
        multi = [r for r in rows if len(keys[r]) > 1]
        single = [r for r in rows if len(keys[r]) == 1]
        q_rows = set(multi)
        k_rows = {k for r in multi for k in keys[r]}
        v_rows = {k for r in rows for k in keys[r]}
        split = lambda s: (tuple(r for r in in_var if r in s),  # noqa: E731
                           tuple(r for r in in_const if r in s))
        (q_var, q_const), (k_var, k_const), (v_var, v_const) = map(split, (q_rows, k_rows, v_rows))
        groups, singles, resids, outs = [], [], [], []
        for is_const in (False, True):
            g_rows = tuple(r for r in multi if (r in const_out) == is_const)
            s_rows = tuple(r for r in single if (r in const_out) == is_const)
            if g_rows:
                g_keys = tuple(sorted({k for r in g_rows for k in keys[r]}))
                mask = torch.tensor([[0.0 if allowed[r][k] else float("-inf") for k in g_keys]
                                     for r in g_rows], device=device)
                groups.append(_Group(g_rows, g_keys, _runs(g_rows, q_var, q_const),
                                     _runs(g_keys, k_var, k_const), _runs(g_keys, v_var, v_const),
                                     mask))
            else:
                groups.append(None)
            singles.append(_runs(tuple(keys[r][0] for r in s_rows), v_var, v_const)
                           if s_rows else None)
            out = g_rows + s_rows
            resids.append(_runs(out, in_var, in_const) if out else None)
            outs.append(out)
        layers.append(_LayerPlan(in_var, in_const, q_var, q_const, k_var, k_const, v_var, v_const,
                                 tuple(groups), tuple(singles), tuple(resids), *outs))
        in_var, in_const = outs
        const = set(in_const)
    return _Plan(tuple(layers), _runs(out_rows, in_var, in_const))


def _attend(q: Tensor, k: Tensor, v: Tensor, mask: Tensor, sqrt_d: float) -> Tensor:
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


def _f64(x: Tensor) -> Tensor:
    return x.reshape(-1).to(device="cpu", dtype=torch.float64).contiguous()


def adamw_(param: Tensor, grad: Tensor, exp_avg: Tensor, exp_avg_sq: Tensor, step: int,
           lr: Tensor, weight_decay: Tensor, active: Tensor | None) -> None:
    """``torch.optim.AdamW`` (single-tensor algorithm, defaults) over (E, P), in place.

    Members with ``active`` False are left untouched (weights and moments); ``active`` None: all
    members step (in place, the same arithmetic).
    """
    beta1, beta2 = BETAS
    if active is None:
        exp_avg.lerp_(grad, 1 - beta1)
        exp_avg_sq.mul_(beta2).add_((1 - beta2) * grad * grad)
        step_size = lr / (1 - beta1**step)
        denom = (exp_avg_sq.sqrt() / math.sqrt(1 - beta2**step)).add_(EPS)
        param.mul_(1 - lr * weight_decay).sub_(step_size * exp_avg / denom)
        return
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
    """TransformerLens "LN" with per-member affine w, b (E, D); x (E, ..., D).

    TL's centre-and-divide-by-sqrt(mean square + eps) is ``F.layer_norm`` without affine (one
    fused op forward and backward, equal up to rounding)."""
    shape = (w.shape[0],) + (1,) * (x.dim() - 2) + (w.shape[1],)
    return torch.addcmul(b.view(shape), F.layer_norm(x, x.shape[-1:], eps=1e-5), w.view(shape))


def _is_identity(sd: dict[str, Tensor], which: str, cfg) -> bool:
    H, D, d = cfg.n_heads, cfg.d_model, cfg.d_head
    eye = torch.eye(D, d) if which == "W_V" else torch.eye(d, D)
    return all(torch.equal(sd[f"blocks.{i}.attn.{which}"].cpu(), eye.expand(H, *eye.shape))
               for i in range(cfg.n_layers))
