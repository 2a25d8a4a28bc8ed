"""The seed's parameter overview: name, shape, trainable; totals."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # torch is not needed to import this module (``listcopy --help`` stays fast)
    from torch import nn


@dataclass(frozen=True)
class ParameterRow:
    name: str
    shape: tuple[int, ...]
    trainable: bool
    numel: int


@dataclass(frozen=True)
class ParameterTable:
    rows: tuple[ParameterRow, ...]

    @property
    def total(self) -> int:
        return sum(r.numel for r in self.rows)

    @property
    def trainable(self) -> int:
        return sum(r.numel for r in self.rows if r.trainable)

    def to_dict(self) -> dict:
        return {"rows": [asdict(r) for r in self.rows], "total": self.total,
                "trainable": self.trainable}

    def format(self, only_trainable: bool = True) -> str:
        """The notebook's table: trainable rows (as it prints them), then the totals."""
        rule = "-" * 80
        lines = [f"{'Parameter Name':<40} | {'Shape':<20} | {'Trainable':<10}", rule]
        for r in self.rows:
            if r.trainable or not only_trainable:
                yes = "Yes" if r.trainable else "No"
                lines.append(f"{r.name:<40} | {str(r.shape):<20} | {yes:<10}")
        lines += [rule, f"Total parameters: {self.total}",
                  f"Trainable parameters: {self.trainable}", rule]
        return "\n".join(lines)


def parameter_table(model: "nn.Module") -> ParameterTable:
    return ParameterTable(tuple(ParameterRow(n, tuple(p.shape), p.requires_grad, p.numel())
                                for n, p in model.named_parameters()))
