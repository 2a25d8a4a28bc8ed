"""The ensemble: E models of one shape trained at once, composed of storage, optimiser and backend.

``Ensemble`` holds the members' parameters (params.py: one flat (E, P) buffer), their AdamW state
(optim.py) and one backend (backend.py) that computes steps, gradients, metrics and logits: the
compiled CPU kernel where it applies and builds, else torch. Its differentiable forward
(``output_logits``) is the pruned torch forward (forward.py) whatever the backend.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor

from ..config import Config
from ..model import InitialState, ListCopyCore, with_weights
from ..task import constant_positions
from . import choice
from .backend import Backend, Stretch
from .cuda_graph import GraphedTorch, graphs_apply
from .forward import PrunedForward
from .kernel import KernelShape
from .kernel_backend import KernelBackend, kernel_shape, unfit
from .optim import AdamW
from .params import Layout, Params, WeightFacts
from .rows import model_row_needs
from .torch_backend import TorchBackend

BACKENDS = ("auto", "kernel", "torch")


class Ensemble:
    """E models of one shape (one ``config.task`` and ``config.model``) and their AdamW state.

    ``backend``: "auto" (on the CPU the faster of the C kernel and torch for this shape, by
    choice.py's table; the kernel only where it builds), "kernel" (raise if it does not apply)
    or "torch" (on cuda its training steps replayed as CUDA graphs, cuda_graph.py).
    """

    def __init__(self, config: Config, state_dicts: list[dict[str, Tensor]],
                 device: torch.device | str = "cpu", *, backend: str = "auto"):
        if backend not in BACKENDS:
            raise ValueError(f"backend {backend!r}: must be one of {', '.join(BACKENDS)}")
        self.config = config
        self.device = torch.device(device)
        self.template = ListCopyCore(config)  # names, buffers, trainable flags
        self.layout = Layout.of(self.template)
        self.params = Params.stack(self.layout, state_dicts, self.device)
        self.optim = AdamW.zeros(len(state_dicts), self.layout.size, self.device)
        self.facts = WeightFacts.of(config, self.params)
        self.needs = model_row_needs(config.task.list_len, config.model.n_layers,
                                     config.model.layer0_mask)
        self.forward = PrunedForward(config, self.facts, self.needs, self.device)
        self._backend: Backend = self._choose_backend(backend)

    def _choose_backend(self, backend: str) -> Backend:
        if backend != "torch":
            why = unfit(self.config, self.device)
            fastest = choice.pick(self.config).backend == "kernel"
            if why is None and (backend == "kernel" or fastest):
                kernel = KernelBackend.load(self.kernel_shape())
                if kernel is not None:
                    return kernel
            if backend == "kernel":
                raise ValueError(f"the CPU kernel cannot train this ensemble: {why or 'it did not build'}")
        eager = TorchBackend(self.forward)
        return GraphedTorch(eager) if graphs_apply(self.device) else eager

    @classmethod
    def init(cls, config: Config, generators: list[torch.Generator],
             device: torch.device | str = "cpu", *, backend: str = "auto") -> "Ensemble":
        """New members, member i's weights drawn from ``generators[i]`` (see model.InitialState)."""
        initial = InitialState(ListCopyCore(config))
        sds = [initial.draw(g) for g in generators]
        return cls(config, sds, device, backend=backend)

    @property
    def n_members(self) -> int:
        return self.params.n_members

    @property
    def backend(self) -> str:
        """The backend in use: "kernel" or "torch"."""
        return self._backend.name

    def kernel_shape(self, dw_lanes: bool | None = None) -> KernelShape | None:
        """The shape the CPU kernel would be compiled for (its variant by choice.py's table unless
        ``dw_lanes`` is given; the rows the task's constant tokens keep constant computed once per
        step), or None where it does not apply."""
        if unfit(self.config, self.device) is not None:
            return None
        lanes = choice.pick(self.config).dw_lanes if dw_lanes is None else dw_lanes
        frozen = {name: tuple(t.shape[1:]) for name, t in self.params.frozen.items()}
        shape = kernel_shape(self.config, self.layout, self.needs, self.facts, frozen,
                             dw_lanes=lanes)
        return shape.with_const(constant_positions(self.config.task))

    def host_serial(self):
        """A context for a training loop (the backend's ``host_serial``): with the kernel, torch's
        own ops run on one thread while the kernel keeps torch's thread count."""
        return self._backend.host_serial()

    # ---- weights and optimiser state, by member ----------------------------------------------
    def state_dict(self, member: int) -> dict[str, Tensor]:
        """Member ``member``'s weights as the hooked model's state dict (buffers included), on CPU."""
        return self.state_dicts([member])[0]

    def state_dicts(self, members: Sequence[int]) -> list[dict[str, Tensor]]:
        """:meth:`state_dict` of each of ``members``, copied to the host at once (not per tensor)."""
        return self.params.state_dicts(members, self.template.state_dict())

    def model(self, member: int, hooks: bool = True) -> ListCopyCore:
        """A model holding member ``member``'s weights: hooked (TransformerLens), for analysis,
        unless ``hooks`` is False."""
        return with_weights(self.config, self.state_dict(member), hooks)

    def optimizer_states(self, members: Sequence[int]) -> list[dict[str, Tensor]]:
        """Each member's AdamW moments (``optim.STATE_KEYS``), on the host, for a checkpoint."""
        return self.optim.member_states(members)

    def load_optimizer_states(self, states: Sequence[dict[str, Tensor]], step: int) -> None:
        """Resume: every member's moments as :meth:`optimizer_states` gave them, saved at ``step``."""
        self.optim.load_member_states(states, step)

    # ---- forward --------------------------------------------------------------------------------
    def output_logits(self, tokens: Tensor, params: dict[str, Tensor] | None = None, *,
                      const_positions: frozenset[int] | None = None) -> Tensor:
        """Logits at the output positions, (E, B, L, V), for tokens (B, T) shared or (E, B, T).

        Differentiable (torch ops, any backend); :meth:`predict` is the fast no-grad version.
        Only the rows the output positions depend on are computed (rows.py, plan.py), and rows
        that are the same for every example (``const_positions``: positions whose token is the
        same in every row of ``tokens``; found from ``tokens`` when None) once per member.
        """
        p = self.params.views() if params is None else params
        return self.forward.logits(p, tokens, const_positions)

    def const_positions(self, tokens: Tensor) -> frozenset[int]:
        """See :meth:`PrunedForward.const_positions`."""
        return self.forward.const_positions(tokens)

    def member_loss(self, tokens: Tensor, targets: Tensor, params: dict[str, Tensor] | None = None,
                    *, const_positions: frozenset[int] | None = None) -> Tensor:
        """Per-member mean cross-entropy (E,) on output positions; targets (E, B, L) or (B, L)."""
        p = self.params.views() if params is None else params
        return self.forward.member_loss(p, tokens, targets, const_positions)

    @torch.no_grad()
    def predict(self, inputs: Tensor) -> Tensor:
        """Logits at the output positions, (E, N, L, V), for inputs (N, T) shared by all members."""
        return self._backend.predict(self.params, inputs)

    # ---- training and evaluation ----------------------------------------------------------------
    def loss_and_grad(self, tokens: Tensor, targets: Tensor) -> tuple[Tensor, Tensor]:
        """Per-member mean loss (E,) and its gradient w.r.t. the flat parameters (E, P)."""
        return self._backend.loss_and_grad(self.params, tokens, targets)

    def train_steps(self, inputs: Tensor, targets: Tensor, batches: Tensor, batch0: int,
                    n_steps: int, lr: Tensor, weight_decay: Tensor, active: Tensor,
                    loss_sum: Tensor, max_grad_norm: Tensor | None = None) -> None:
        """``n_steps`` AdamW steps of the active members (see :class:`~.backend.Stretch` for the
        arguments; ``lr`` may also be (E,), one rate for every step). No host sync inside (torch
        gathers the active members once per call)."""
        if lr.dim() == 1:
            lr = lr[:, None].expand(lr.shape[0], n_steps)
        if tuple(lr.shape) != (self.n_members, n_steps):
            raise ValueError(f"lr per step must be ({self.n_members}, {n_steps}), "
                             f"got {tuple(lr.shape)}")
        self._backend.train_steps(self.params, self.optim, Stretch(
            inputs, targets, batches, batch0, n_steps, lr, weight_decay, active, loss_sum,
            max_grad_norm))

    @torch.no_grad()
    def evaluate(self, inputs: Tensor, targets: Tensor, chunk: int | None = None,
                 active: Tensor | None = None) -> dict[str, Tensor]:
        """Validation metrics per member, each (E,): ``loss``, ``acc`` (per token), ``seq_acc``.

        inputs / targets (N, T) are shared by all members. With ``active`` (E,) bool, only those
        members are evaluated (the others get NaN). Torch backend: in chunks of the N lists.
        """
        L = self.config.task.list_len
        out = self._backend.evaluate(self.params, inputs, targets[:, L + 1:], active, chunk)
        if active is not None:
            for v in out.values():
                v[~active.reshape(-1).bool().to(v.device)] = float("nan")
        return out
