"""Which CPU backend trains a shape fastest, and which kernel variant: one measured table.

Both backends train every configuration on the CPU (the kernel up to d_model ``MAX_D_MODEL``);
``pick(config)`` says which is faster for it, from the rows of ``CPU_TABLE`` (the first row whose
widest d_model covers the model's). The rows come from ``listcopy bench --shapes`` on this
project's 2-core VM (benchmarks/README.md, "Per shape"): the kernel with weight gradients summed
lane by lane is fastest for narrow models, the kernel with transposed rows for wide ones, and
the kernel beats the torch backend at every width measured (8 to 128), with every flag.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..config import Config


@dataclass(frozen=True)
class Pick:
    """A backend and its variant: ``dw_lanes`` (kernel only) accumulates weight gradients lane by
    lane (one L1-resident buffer per matrix), else multiplies each group's transposed rows."""

    backend: str  # "kernel" or "torch"
    dw_lanes: bool = True
    why: str = ""


# (widest d_model, pick): the first row that covers a model's d_model applies.
CPU_TABLE: tuple[tuple[int, Pick], ...] = (
    (16, Pick("kernel", dw_lanes=True, why="narrow: weight gradients lane by lane")),
    (1 << 30, Pick("kernel", dw_lanes=False, why="wide: weight gradients by transposed rows")),
)


def pick(config: Config, table: tuple[tuple[int, Pick], ...] | None = None) -> Pick:
    """The fastest CPU backend (and kernel variant) for ``config``'s shape, by ``table``
    (default ``CPU_TABLE``)."""
    for widest, choice in CPU_TABLE if table is None else table:
        if config.model.d_model <= widest:
            return choice
    return Pick("torch", why="wider than any measured row")
