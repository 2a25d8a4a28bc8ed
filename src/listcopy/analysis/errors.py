"""Where the clean model's mistakes come from: per output position, how often the prediction is
right, another digit of its own list (the order wrong), or a digit the list does not hold; per
list, whether the outputs hold the right digits in some order; and the ``ablate`` taxonomy of
the wrong predictions (equal to the previous output, to each input digit).

    >>> e = output_errors(model, config)
    >>> e.to_dict()["set_acc"], e.to_dict()["positions"]["o2"]["in_list"]

A model that carries the digits but not their order (the failed seeds of the paper's grid) has
``right + in_list`` near 1 at every position: each output is a digit of its list, the other one
about half the time.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from ..config import Config
from ..task import Dataset
from .common import BATCH_SIZE, Metrics, checked_inputs, to_json
from .edge_sets import error_taxonomy, predictions


@dataclass(frozen=True)
class OutputErrors:
    metrics: Metrics
    set_acc: float  # lists whose outputs are their targets in some order (as multisets)
    right: tuple[float, ...]  # per output position
    in_list: tuple[float, ...]  # per output position: wrong, and a digit of the list
    not_in_list: tuple[float, ...]  # per output position: a digit the list does not hold
    taxonomy: dict[str, dict[str, Any]]  # o1 .. oL -> ``error_taxonomy``'s row

    def to_dict(self) -> dict[str, Any]:
        positions = {f"o{j + 1}": {"right": self.right[j], "in_list": self.in_list[j],
                                   "not_in_list": self.not_in_list[j], **self.taxonomy[f"o{j + 1}"]}
                     for j in range(len(self.right))}
        return to_json({"metrics": self.metrics.to_dict(), "set_acc": self.set_acc,
                        "positions": positions})


def error_split(preds: Tensor, targets: Tensor, digits: Tensor) -> dict[str, Any]:
    """preds, targets (N, L) at the output positions, digits (N, L) the inputs -> ``set_acc``
    and, per position, the fractions ``right``, ``in_list`` (wrong, but one of the list's digits)
    and ``not_in_list``, which sum to 1."""
    right = preds == targets
    held = (preds[:, :, None] == digits[:, None, :]).any(-1)
    same_set = (preds.sort(-1).values == targets.sort(-1).values).all(-1)

    def mean(x: Tensor) -> tuple[float, ...]:
        return tuple(float(v) for v in x.double().mean(0))

    return {"set_acc": float(same_set.double().mean()), "right": mean(right),
            "in_list": mean(~right & held), "not_in_list": mean(~right & ~held)}


@torch.no_grad()
def output_errors(model, config: Config, data: Dataset | None = None,
                  batch_size: int = BATCH_SIZE) -> OutputErrors:
    """The clean model's errors on the validation set (see the module's docstring)."""
    data = checked_inputs(model, config, data, batch_size)
    clean = predictions(model, data, batch_size=batch_size)
    L = config.task.list_len
    targets = data.val_targets[:, config.task.output_slice]
    digits = data.val_inputs[:, :L]
    split = error_split(clean.preds, targets, digits)
    return OutputErrors(clean.metrics, split["set_acc"], split["right"], split["in_list"],
                        split["not_in_list"], error_taxonomy(clean.preds, targets, digits))


def summary_lines(e: dict[str, Any]) -> list[str]:
    per = "; ".join(f"{name} right {p['right']:.4f}, other digit of the list {p['in_list']:.4f},"
                    f" not in the list {p['not_in_list']:.4f}"
                    for name, p in e["positions"].items())
    return [f"errors: the right digits in some order {e['set_acc']:.4f} "
            f"(seq_acc {e['metrics']['seq_acc']:.4f})", f"  {per}"]


ENDINGS = ("solved", "nearly solved", "first output only", "order lost", "too narrow", "other")


def ending(errors: dict[str, Any], solved: float = 0.9, nearly: float = 0.7) -> str:
    """How a trained model ends, one of ``ENDINGS``, from ``OutputErrors.to_dict()``, first rule
    that applies: ``solved`` (validation accuracy above ``solved``); ``nearly solved`` (above
    ``nearly``); ``too narrow`` (over half the predictions are not a digit of the list: SEP does
    not carry the digits); ``first output only`` (o1 right at least 85% of the time, every later
    output under half: the paper grid's [d1, d1]); ``order lost`` (at least 90% of predictions
    are digits of the list, the wrong one too often: the order is not carried); else ``other``."""
    positions = list(errors["positions"].values())
    not_in_list = sum(p["not_in_list"] for p in positions) / len(positions)
    acc = errors["metrics"]["acc"]
    if acc > solved:
        return "solved"
    if acc > nearly:
        return "nearly solved"
    if not_in_list > 0.5:
        return "too narrow"
    if (len(positions) > 1 and positions[0]["right"] >= 0.85
            and max(p["right"] for p in positions[1:]) < 0.5):
        return "first output only"
    return "order lost" if not_in_list <= 0.1 else "other"
