"""Experiment logging: every evaluation of a training run, sent to a tracker as it happens.

``Tracker`` is what training calls (``log`` after each evaluation, ``finish`` at the end);
``open_tracker("wandb", ...)`` makes the Weights & Biases one (``pip install -e ".[wandb]"``). It
logs what run.json's history holds (train_loss, val_loss, acc, seq_acc, and lr under a schedule)
against a ``step`` metric; an ensemble's members are one W&B run, each member's metrics under its
own prefix (``seed-3/acc``). W&B's own settings apply (``WANDB_MODE=offline`` writes the run under
``DIR/wandb`` and sends nothing; ``WANDB_PROJECT``, ``WANDB_ENTITY``); a run W&B cannot start
(no API key) is one line, before training, and leaves no folder behind. wandb is imported only
when a tracker is opened, so training without one never loads it.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, Sequence

from .errors import BadInput, one_line

if TYPE_CHECKING:
    from .config import Config
    from .training import Run

TRACKERS = ("wandb",)
PROJECT = "listcopy"  # the W&B project when WANDB_PROJECT does not name one


class Tracker(Protocol):
    def log(self, step: int, runs: Sequence["Run"]) -> None:
        """``runs`` were just evaluated at ``step``: the last entry of each one's history."""

    def finish(self, runs: Sequence["Run"], summary: dict[str, Any] | None = None) -> None:
        """Training is over: each run's final record (and the ensemble's summary)."""


def check_tracker(kind: str) -> None:
    """``BadInput`` (one line) if ``kind`` is unknown or its package is not installed."""
    if kind not in TRACKERS:
        raise BadInput(f"--log {kind!r}: must be one of {', '.join(TRACKERS)}")
    try:
        importlib.import_module(kind)
    except ImportError:
        raise BadInput(f"--log {kind}: the {kind} package is not installed"
                       f' (pip install -e ".[{kind}]")') from None


def member_label(run: "Run", n_members: int) -> str:
    """The prefix of a member's metrics: none for one run, ``seed-S/`` in an ensemble."""
    return "" if n_members == 1 else f"seed-{run.config.train.seed}/"


class WandbTracker:
    """One W&B run for one ``listcopy train`` (all members of an ensemble)."""

    def __init__(self, configs: Sequence["Config"], out: Path, name: str):
        import os
        import shutil

        import wandb

        made = [d for d in (out, *out.parents) if not d.exists()]  # mkdir's, deepest first
        out.mkdir(parents=True, exist_ok=True)
        seeds = [c.train.seed for c in configs]
        self.n = len(configs)
        try:
            self.run = wandb.init(project=os.environ.get("WANDB_PROJECT") or PROJECT, name=name,
                                  dir=str(out), config={**configs[0].to_dict(), "seeds": seeds})
        except wandb.errors.Error as err:  # no API key (UsageError), a bad one, no connection
            if made:  # held nothing before this command: nothing of a failed run is left
                shutil.rmtree(made[-1], ignore_errors=True)
            why = one_line(err, 200, first_line=True)
            raise BadInput(f"--log wandb: W&B could not start a run ({why}): run `wandb login`,"
                           " set WANDB_API_KEY, or set WANDB_MODE=offline to log locally") from None
        self.run.define_metric("step")
        self.run.define_metric("*", step_metric="step")

    def log(self, step: int, runs: Sequence["Run"]) -> None:
        data: dict[str, Any] = {"step": step}
        for run in runs:
            label = member_label(run, self.n)
            data.update({label + k: v for k, v in run.history[-1].items() if k != "step"})
        self.run.log(data)

    def finish(self, runs: Sequence["Run"], summary: dict[str, Any] | None = None) -> None:
        for run in runs:
            label = member_label(run, self.n)
            final = {"status": run.status, "stop_reason": run.stop_reason, "step": run.step,
                     "steps_to_threshold": run.steps_to_threshold, **run.metrics}
            self.run.summary.update({f"{label}final/{k}": v for k, v in final.items()})
        if summary is not None and summary.get("kept") is not None:
            self.run.summary.update({f"kept/{k}": v for k, v in summary["kept"].items()})
        self.run.finish()


def open_tracker(kind: str | None, configs: Sequence["Config"], out: Path,
                 name: str) -> Tracker | None:
    """The tracker ``kind`` (None: no tracker) for a run of ``configs`` written under ``out``."""
    if kind is None:
        return None
    check_tracker(kind)
    return WandbTracker(configs, out, name)
