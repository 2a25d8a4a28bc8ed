"""The compiled CPU kernel's Python side: its shape header, its modes, and the ctypes wrapper.

The C source is ``kernel.c`` beside this file (package data): forward, backward and AdamW of any
configuration of the model (LayerNorm, biases, learned or identity W_V / W_O, any heads, per-layer
masks with rows that receive nothing), many steps per call. Everything the source depends on is
a compile-time constant: this module writes it as a short header of ``#define``s
(:meth:`KernelShape.header`), which the build (kernel_build.py) passes with ``-include``, so
compiler messages carry kernel.c's own line numbers.

Why it is fast: a training step of the default model is ~3.6 MFLOP spread over thousands of tiny
ops (5x5 attention, 8-wide projections), which PyTorch pays for in dispatch and memory passes. Here
a group of ``W`` sequences is processed at once with the batch in the innermost ("lane") axis, so
every scalar of the per-sequence math is one SIMD vector (GCC / Clang vector extensions), the
activations stay in cache, the unembedding, softmax, cross-entropy and their backward are fused,
and only the query/key positions that can reach an output are computed (rows.py). Matrix products
keep a block of outputs in registers while the weight is broadcast; weight gradients are either
accumulated lane by lane (narrow models) or, for wide ones, each group's rows are transposed and
multiplied (``dw_lanes``, chosen per shape in choice.py). With one head and learned (or given)
W_V and W_O, the rows multiply by W_V W_O, formed once per step: one product per row where the
model has two (``fold_vo``). In the task's data SEP and the outputs hold one token in every
sequence, so their rows (and every row that receives only from such rows) are the same in every
sequence: they are computed once per step, and what each sequence's backward sends them is summed
and taken back once (``const0``, ``const_rows``; a token table without those constant tokens gets
the variant for the positions it does hold constant). Members are independent: each call runs
``n_steps`` steps of every active member, members spread over threads; a stopped member costs
nothing.

Numerics: float32 as torch, exp by Cephes' polynomial (about 1 ulp), sums in another order than
torch's kernels: results equal the torch backend's up to float rounding (tests/engine/), and a
float64 reference is as close to the one as to the other. Denormals are flushed to zero while the
kernel runs (the caller's setting is restored after each call): a converged model is full of them,
and on Intel cores each costs a microcode assist (2.3-3.7x slower steps).

Shapes (all C constants): T positions, L list_len, D d_model, H heads, DH d_head, V vocab,
NL layers, W lanes (sequences per SIMD group), P trained parameters per member, F frozen ones
the kernel is given (frozen weights that are neither identities nor zero).
"""

from __future__ import annotations

import ctypes
import dataclasses
import enum
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from .rows import RowNeeds

# Widest model the kernel is built for (its buffers grow with d_model; whether it or torch is
# faster at a width is choice.py's table).
MAX_D_MODEL = 512
SYMBOLS = ("lc_run", "lc_work_bytes")  # what a built library must export
TRAINED, GIVEN = 0, 1  # where a parameter lives: theta (trained) or fixed (frozen, passed in)
# Each parameter the C source knows, by its C name: the model's state-dict name ({i}: the layer).
MODEL_PARAMS = (("WE", "embed.W_E"), ("WPOS", "pos_embed.W_pos"), ("WU", "unembed.W_U"),
                ("BU", "unembed.b_U"), ("LNFW", "ln_final.w"), ("LNFB", "ln_final.b"))
LAYER_PARAMS = (("LN1W", "ln1.w"), ("LN1B", "ln1.b"), ("WQ", "attn.W_Q"), ("WK", "attn.W_K"),
                ("WV", "attn.W_V"), ("WO", "attn.W_O"), ("BQ", "attn.b_Q"), ("BK", "attn.b_K"),
                ("BV", "attn.b_V"), ("BO", "attn.b_O"))


class Mode(enum.IntEnum):
    """``enum lc_mode`` of kernel.c: what one ``lc_run`` call does."""

    TRAIN = 0  # n_steps AdamW steps of every active member
    GRAD = 1  # each member's mean loss and gradient on one batch
    EVAL = 2  # summed cross-entropy, token and sequence hits (and logits) on a range of rows


def source_path() -> Path:
    """kernel.c, shipped beside this module (the compiler reads it from here, so its messages name
    the file and its lines)."""
    return Path(__file__).with_name("kernel.c")


@dataclass(frozen=True)
class KernelShape:
    """Everything the compiled code depends on besides kernel.c.

    ``where`` maps the state-dict name of every parameter the kernel reads to (source, offset):
    TRAINED (in a member's row of the flat parameters, its gradient computed) or GIVEN (frozen,
    in a member's row of the ``fixed`` buffer). A parameter not in ``where`` is absent: an
    identity W_V / W_O, a zero bias, or no LayerNorm."""

    T: int
    L: int
    D: int
    H: int
    V: int
    ln: bool
    where: tuple[tuple[str, tuple[int, int]], ...]
    P: int
    F: int
    needs: RowNeeds  # the per-layer masks and which rows each layer needs
    dw_lanes: bool = True  # weight gradients lane by lane (narrow) or by transposed rows (wide)
    fold_vo: bool = True  # multiply by W_V W_O (formed once per step) where the shape allows
    const0: tuple[int, ...] = ()  # positions whose token is the same in every sequence of the data

    def with_const(self, positions) -> "KernelShape":
        """This shape for data whose tokens at ``positions`` are the same in every sequence: the
        rows that stay the same (:meth:`const_rows`) are computed once per step, not per
        sequence."""
        return dataclasses.replace(self, const0=tuple(sorted(positions)))

    def const_rows(self) -> list[list[bool]]:
        """Per level l = 0..NL, whether row t of layer l's input is the same in every sequence: a
        constant token, and after each layer only rows that receive from constant rows alone."""
        rows = [[t in self.const0 for t in range(self.T)]]
        for layer in range(self.NL):
            prev, keys = rows[-1], self.needs.keys[layer]
            rows.append([prev[t] and all(prev[j] for j in keys[t]) for t in range(self.T)])
        return rows

    @property
    def n_const(self) -> int:
        """Constant rows the model needs (over all levels): 0 where the variant does not apply."""
        return sum(c and t in self.needs.held[level]
                   for level, row in enumerate(self.const_rows()) for t, c in enumerate(row))

    @property
    def folds(self) -> bool:
        """Whether the kernel folds W_V and W_O into one matrix: one head, both present. The rows
        then take one product (the attention output's) instead of two (the values' and the
        output's); forming W_VO and turning its gradient into W_V's and W_O's costs a few D^3 per
        step."""
        present = all(self.source(f"blocks.0.attn.{w}") >= 0 for w in ("W_V", "W_O"))
        return self.fold_vo and self.H == 1 and present

    @property
    def NL(self) -> int:
        return self.needs.n_layers

    @property
    def DH(self) -> int:
        return self.D // self.H

    def given_names(self) -> list[str]:
        """The GIVEN parameters, in their order in ``fixed``."""
        return [name for name, (src, _) in sorted(self.where, key=lambda kv: kv[1][1])
                if src == GIVEN]

    def source(self, name: str) -> int:
        """TRAINED, GIVEN or -1 (absent) for a state-dict name."""
        return dict(self.where).get(name, (-1, 0))[0]

    def header(self, lanes: int) -> str:
        """The shape as ``#define``s, for ``-include``."""
        sqrt_dh = float(torch.tensor(self.DH ** 0.5, dtype=torch.float32))
        defines = {
            "LC_SHAPE": 1, "T": self.T, "L": self.L, "D": self.D, "H": self.H, "DH": self.DH,
            "V": self.V, "NL": self.NL, "W": lanes, "P": self.P, "NFIX": self.F,
            "LN": int(self.ln), "DW_LANES": int(self.dw_lanes), "FOLD": int(self.folds),
            "NCONST": self.n_const,
            "SQRT_DH": f"{sqrt_dh!r}f",
        }
        defines.update(self._param_defines())
        defines.update(self._row_defines())
        lines = ["/* generated by listcopy.engine.kernel: the shape kernel.c is compiled for */"]
        lines += [f"#define {name} {value}" for name, value in defines.items()]
        return "\n".join(lines) + "\n"

    def _param_defines(self) -> dict[str, object]:
        where = dict(self.where)
        out: dict[str, object] = {}
        for cname, name in MODEL_PARAMS:
            src, off = where.get(name, (-1, 0))
            out[f"SRC_{cname}"], out[f"OFF_{cname}"] = src, off
        for cname, name in LAYER_PARAMS:
            spots = [where.get(f"blocks.{i}.{name}", (-1, 0)) for i in range(self.NL)]
            if len({src for src, _ in spots}) != 1:
                raise ValueError(f"{name}: every layer's must live in the same place")
            out[f"SRC_{cname}"] = spots[0][0]
            out[f"OFF_{cname}_INIT"] = _c([off for _, off in spots])
        return out

    def _row_defines(self) -> dict[str, object]:
        needs, T = self.needs, self.T

        def table(rows_of) -> str:
            return _c([[int(t in rows_of(layer)) for t in range(T)] for layer in range(self.NL)])

        return {
            "ALLOW_INIT": _c([[[int(x) for x in row] for row in m] for m in needs.allowed]),
            "NEED_INIT": _c([[int(t in rows) for t in range(T)] for rows in needs.held]),
            "QROW_INIT": table(needs.attending),
            "KROW_INIT": table(needs.key_rows),
            "VROW_INIT": table(needs.value_rows),
            "NKEY_INIT": _c([[len(keys) for keys in layer] for layer in needs.keys]),
            "CROW_INIT": _c([[int(c) for c in row] for row in self.const_rows()]),
        }

    def flops_per_sequence(self) -> float:
        """Floating-point operations of one sequence's forward pass as the kernel computes it
        (matrix products and attention; only the rows an output needs, and not the constant
        rows, computed once per call): what a call's length and the benchmarks' floor are
        measured in."""
        return sum(fwd for fwd, _ in self._products(constant=False))

    def flops_per_step(self, batch_size: int) -> float:
        """One member's training step: forward, backward (the input's gradient through every
        product, the weight's where it is trained) of the varying rows per sequence and of the
        constant rows once, and AdamW (about 10 per parameter)."""
        per_seq = sum(fwd + back for fwd, back in self._products(constant=False))
        once = sum(fwd + back for fwd, back in self._products(constant=True))
        return batch_size * per_seq + once + 10.0 * self.P + self._fold_flops()

    def _fold_flops(self) -> float:
        """Per step, where folded: W_VO formed, and its gradient turned into each trained one's."""
        if not self.folds:
            return 0.0
        trained = sum(self.source(f"blocks.0.attn.{w}") == TRAINED for w in ("W_V", "W_O"))
        return 2.0 * self.D ** 3 * (1 + trained) * self.NL

    def _products(self, constant: bool) -> list[tuple[float, float]]:
        """(forward, backward) FLOPs of one sequence's rows that vary (``constant`` False) or of
        the constant rows (True) for each product the kernel computes."""
        D, V, needs, crow = self.D, self.V, self.needs, self.const_rows()
        trained = lambda name: self.source(name) == TRAINED  # noqa: E731
        out = []
        for layer in range(self.NL):
            pre = f"blocks.{layer}."
            ins = lambda rows: [r for r in rows if crow[layer][r] == constant]  # noqa: E731
            outs = [r for r in needs.out(layer) if crow[layer + 1][r] == constant]
            rows = [(len(ins(needs.attending(layer))), "attn.W_Q"),
                    (len(ins(needs.key_rows(layer))), "attn.W_K")]
            if self.source(pre + "attn.W_V") >= 0 and not self.folds:
                rows.append((len(ins(needs.value_rows(layer))), "attn.W_V"))
            if self.source(pre + "attn.W_O") >= 0:
                rows.append((sum(1 for r in outs if needs.keys[layer][r]), "attn.W_O"))
            for n, name in rows:
                fwd = 2.0 * n * D * D
                grad_w = trained(pre + name) or (self.folds and trained(pre + "attn.W_V"))
                out.append((fwd, fwd * (2 if grad_w else 1)))
            pairs = sum(len(needs.keys[layer][r]) for r in outs)
            scored = sum(len(needs.keys[layer][r]) for r in outs if len(needs.keys[layer][r]) > 1)
            out.append((2.0 * D * (pairs + scored), 4.0 * D * (pairs + scored)))
        if not constant:  # the outputs' logits: every sequence its own
            unembed = 2.0 * self.L * D * V
            out.append((unembed, 2 * unembed))
        return out


def _c(value) -> str:
    """A (nested) list as a C initialiser."""
    if isinstance(value, (list, tuple)):
        return "{" + ", ".join(_c(v) for v in value) + "}"
    return str(value)


class _Args(ctypes.Structure):
    """``Args`` of kernel.c, field by field."""

    _fields_ = [
        ("n_members", ctypes.c_int64),
        ("theta", ctypes.c_void_p), ("exp_avg", ctypes.c_void_p), ("exp_avg_sq", ctypes.c_void_p),
        ("fixed", ctypes.c_void_p),
        ("lr", ctypes.c_void_p), ("wd", ctypes.c_void_p), ("lr_steps", ctypes.c_int64),
        ("max_grad_norm", ctypes.c_void_p),
        ("active", ctypes.c_void_p),
        ("tokens", ctypes.c_void_p), ("targets", ctypes.c_void_p),
        ("n_rows", ctypes.c_int64),
        ("batches", ctypes.c_void_p),
        ("n_batches", ctypes.c_int64), ("batch_size", ctypes.c_int64), ("batch0", ctypes.c_int64),
        ("n_steps", ctypes.c_int64), ("step0", ctypes.c_int64),
        ("row0", ctypes.c_int64), ("row_count", ctypes.c_int64),
        ("loss", ctypes.c_void_p),
        ("hits", ctypes.c_void_p), ("seq_hits", ctypes.c_void_p),
        ("grad", ctypes.c_void_p),
        ("logits", ctypes.c_void_p),
        ("n_threads", ctypes.c_int64),
    ]


def _ptr(t: Tensor | None) -> int | None:
    return None if t is None else t.data_ptr()


class Kernel:
    """A loaded kernel library; every tensor passed is a contiguous CPU tensor of the dtype named.
    Raises AttributeError where the library lacks a symbol of ``SYMBOLS``."""

    def __init__(self, lib: ctypes.CDLL, shape: KernelShape):
        self.lib = lib
        self._run = lib.lc_run
        self._run.argtypes = [ctypes.POINTER(_Args), ctypes.c_int]
        self._run.restype = ctypes.c_int
        lib.lc_work_bytes.restype = ctypes.c_int
        self.shape = shape

    def _call(self, mode: Mode, **kw) -> None:
        args = _Args(**{k: _ptr(v) if isinstance(v, Tensor) or v is None else v
                        for k, v in kw.items()})
        status = self._run(ctypes.byref(args), int(mode))
        if status == 1:
            raise MemoryError(f"listcopy kernel ({mode.name.lower()}): out of memory")
        if status != 0:
            raise RuntimeError(f"listcopy kernel ({mode.name.lower()}): status {status}")

    def train(self, theta: Tensor, exp_avg: Tensor, exp_avg_sq: Tensor, lr: Tensor, wd: Tensor,
              active: Tensor | None, tokens: Tensor, targets: Tensor, batches: Tensor, batch0: int,
              n_steps: int, step0: int, loss: Tensor, n_threads: int, *, fixed: Tensor | None = None,
              max_grad_norm: Tensor | None = None) -> None:
        """``n_steps`` AdamW steps of every active member, in place; member e's step s uses rows
        ``batches[e, (batch0 + s) % n_batches]`` and learning rate ``lr[e]`` (lr (E,)) or
        ``lr[e, s]`` (lr (E, n_steps)); adds each step's mean loss into ``loss`` (float64).
        lr, wd, max_grad_norm: float64; max_grad_norm (E,) clips each member's gradient norm
        before its update (0: not that member); active: uint8 (E,) or None; fixed: float32
        (E, F), the frozen parameters the shape says are given."""
        E, n_batches, B = batches.shape
        lr_steps = lr.shape[1] if lr.dim() == 2 else 0
        if lr_steps and lr_steps < n_steps:
            raise ValueError(f"lr has {lr_steps} steps per member, the call takes {n_steps}")
        self._call(Mode.TRAIN, n_members=E, theta=theta, exp_avg=exp_avg, exp_avg_sq=exp_avg_sq,
                   fixed=fixed, lr=lr, wd=wd, lr_steps=lr_steps, max_grad_norm=max_grad_norm,
                   active=active, tokens=tokens, targets=targets, n_rows=tokens.shape[0],
                   batches=batches, n_batches=n_batches, batch_size=B, batch0=batch0,
                   n_steps=n_steps, step0=step0, loss=loss, n_threads=n_threads)

    def grad(self, theta: Tensor, tokens: Tensor, targets: Tensor, rows: Tensor, loss: Tensor,
             grad: Tensor, n_threads: int = 1, *, fixed: Tensor | None = None) -> None:
        """Mean loss and gradient of member e on rows ``rows[e]`` (E, B)."""
        E, B = rows.shape
        self._call(Mode.GRAD, n_members=E, theta=theta, fixed=fixed, tokens=tokens,
                   targets=targets, n_rows=tokens.shape[0], batches=rows, n_batches=1,
                   batch_size=B, loss=loss, grad=grad, n_threads=n_threads)

    def evaluate(self, theta: Tensor, active: Tensor | None, tokens: Tensor, targets: Tensor,
                 loss: Tensor, hits: Tensor, seq_hits: Tensor, logits: Tensor | None = None,
                 n_threads: int = 1, rows: tuple[int, int] | None = None, *,
                 fixed: Tensor | None = None) -> None:
        """Adds the summed CE, token hits and sequence hits of every active member on ``rows``
        (start, stop; default all) into loss, hits, seq_hits; fills those rows of ``logits``
        (E, N, L, V) when given."""
        start, stop = rows or (0, tokens.shape[0])
        self._call(Mode.EVAL, n_members=theta.shape[0], theta=theta, fixed=fixed, active=active,
                   tokens=tokens, targets=targets, n_rows=tokens.shape[0], row0=start,
                   row_count=stop - start, loss=loss, hits=hits, seq_hits=seq_hits,
                   logits=logits, n_threads=n_threads)
