"""When a member stops early (patience, a quorum) and which member of an ensemble is kept
(``--keep``).

Both follow the research line's train.py decision for decision:

* Patience, at each evaluation (after the target-accuracy check, which comes first): an accuracy
  strictly above the best so far (which starts at 0.0) is an improvement and resets the count;
  anything else (an equal accuracy included) adds one, also while the accuracy is below the
  threshold. The member stops when the count reaches ``patience`` and the *current* accuracy is at
  least ``patience_threshold``. ``patience = 0`` turns it off.
* Keeping (train.py's retries, as seeds trained at once): members are taken in seed order, as
  attempts; one is kept when its final accuracy is strictly above the best so far (starting at
  0.0; ties keep the earlier); ``first:X`` stops at the first member at or above ``X``, ``best``
  looks at all. When no accuracy is above 0, nothing is kept (train.py then fails to save).

A quorum is listcopy's own (the frontier's question, "do at least k of these seeds pass?"): once k
runs of an ensemble have reached their threshold, the answer is known and the others stop.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

from .errors import BadInput


@dataclass(frozen=True)
class Patience:
    """One member's patience state: the best accuracy so far and evaluations since it improved."""

    best: float = 0.0
    count: int = 0

    def update(self, acc: float) -> "Patience":
        if acc > self.best:
            return Patience(acc, 0)
        return Patience(self.best, self.count + 1)

    def stops(self, acc: float, patience: int, threshold: float) -> bool:
        """Whether this state (after :meth:`update` with ``acc``) stops training."""
        return bool(patience) and self.count >= patience and acc >= threshold

    @classmethod
    def replay(cls, accs: Sequence[float]) -> "Patience":
        """The state after evaluations with these accuracies (resume: from the run's history)."""
        state = cls()
        for acc in accs:
            state = state.update(acc)
        return state


@dataclass(frozen=True)
class Quorum:
    """Stop the rest once ``k`` of ``runs`` (objects with ``steps_to_threshold`` and ``status``,
    the finished ones included) have reached their threshold."""

    k: int
    runs: Sequence

    def reached(self) -> bool:
        return sum(r.steps_to_threshold is not None for r in self.runs) >= self.k

    @staticmethod
    def stop(runs) -> None:
        """Those of ``runs`` still running stop: done, ``stop_reason`` "quorum"."""
        for run in runs:
            if run.status == "running":
                run.status, run.stop_reason = "done", "quorum"


@dataclass(frozen=True)
class KeepRule:
    """``best``, or ``first`` with the minimum accuracy ``min_acc``."""

    kind: str
    min_acc: float | None = None

    @classmethod
    def parse(cls, text: str, what: str = "--keep") -> "KeepRule":
        """``best`` or ``first:X`` with X in [0, 1]; ``BadInput`` (one line) otherwise."""
        if text == "best":
            return cls("best")
        kind, sep, value = text.partition(":")
        if kind == "first" and sep:
            try:
                min_acc = float(value)
            except ValueError:
                min_acc = math.nan
            if 0.0 <= min_acc <= 1.0:
                return cls("first", min_acc)
        raise BadInput(f"{what} {text!r}: must be best or first:X with X in [0, 1]"
                       " (e.g. first:0.9)")

    def __str__(self) -> str:
        return self.kind if self.kind == "best" else f"first:{self.min_acc:g}"

    def choose(self, accs: Sequence[float | None]) -> int | None:
        """Index of the member kept among final accuracies in seed order, or None."""
        best, kept = 0.0, None
        for i, acc in enumerate(accs):
            if acc is None or not math.isfinite(acc):
                continue
            if acc > best:
                best, kept = acc, i
            if self.min_acc is not None and acc >= self.min_acc:
                break
        return kept
