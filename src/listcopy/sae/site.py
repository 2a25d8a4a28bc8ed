"""Where an SAE reads and writes: one hook of a listcopy model and some positions of the sequence.

A site is a hook name (``blocks.0.hook_resid_post`` by default) and positions, given by index or
by the task's labels (``d1 .. dL``, ``SEP``, ``o1 .. oL``; SEP is index ``list_len``). The hook's
activation must be per position, ``(batch, position, ...)``; the trailing dimensions are flattened
into the SAE's input width (``hook_q``'s ``(B, T, H, d)`` gives ``H * d``). Reading gives one row
per (list, position), list-major; splicing writes rows back at the same places and leaves every
other activation untouched.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import Tensor

from ..config import ConfigError, TaskConfig
from ..task import token_labels

DEFAULT_HOOK = "blocks.0.hook_resid_post"
NOT_PER_POSITION = ("hook_pattern", "hook_attn_scores")  # (batch, head, query, key)


def parse_positions(text: str | int | tuple | list, task: TaskConfig) -> tuple[int, ...]:
    """``"SEP"``, ``"d1,SEP"``, ``2`` or ``[0, 2]`` -> sorted distinct indices into the sequence."""
    labels = token_labels(task.list_len)
    items = text.split(",") if isinstance(text, str) else (
        [text] if isinstance(text, int) else list(text))
    out: set[int] = set()
    for item in items:
        word = str(item).strip()
        if word.upper() == "SEP":
            out.add(task.list_len)
        elif word in labels:
            out.add(labels.index(word))
        elif word.lstrip("-").isdigit() and 0 <= int(word) < task.seq_len:
            out.add(int(word))
        else:
            raise ConfigError(f"position {word!r}: must be an index 0 .. {task.seq_len - 1} or one"
                              f" of {', '.join(labels)}")
    if not out:
        raise ConfigError("positions: give at least one (e.g. SEP)")
    return tuple(sorted(out))


@dataclass(frozen=True)
class Site:
    """A hook name and the sequence positions an SAE reads there."""

    hook: str
    positions: tuple[int, ...]

    @classmethod
    def parse(cls, hook: str, positions, task: TaskConfig) -> "Site":
        return cls(hook, parse_positions(positions, task))

    def label(self, task: TaskConfig) -> str:
        names = token_labels(task.list_len)
        return f"{self.hook} at {','.join(names[p] for p in self.positions)}"

    def to_dict(self) -> dict:
        return {"hook": self.hook, "positions": list(self.positions)}


def check_site(model, site: Site) -> int:
    """The site's width (the SAE's input size) on ``model``; ``ConfigError`` if it cannot be used."""
    hooks = model.hook_dict
    if site.hook not in hooks:
        resid = [n for n in hooks if n.endswith("hook_resid_post")]
        raise ConfigError(f"hook {site.hook!r} does not exist in this model (e.g. "
                          f"{', '.join(resid)})")
    if site.hook.endswith(NOT_PER_POSITION):
        raise ConfigError(f"hook {site.hook!r} holds attention weights (batch, head, query, key),"
                          " not activations per position")
    T = model.cfg.n_ctx
    bad = [p for p in site.positions if not 0 <= p < T]
    if bad:
        raise ConfigError(f"position {bad[0]} is outside the sequence (0 .. {T - 1})")
    shape = _probe_shape(model, site.hook)
    if len(shape) < 3 or shape[1] != T:
        raise ConfigError(f"hook {site.hook!r} gives activations of shape {tuple(shape)},"
                          " not (batch, position, ...)")
    width = 1
    for n in shape[2:]:
        width *= n
    return width


@torch.no_grad()
def _probe_shape(model, hook: str) -> torch.Size:
    seen: list[torch.Size] = []

    def record(act: Tensor, hook) -> None:
        seen.append(act.shape)

    tokens = torch.zeros(1, model.cfg.n_ctx, dtype=torch.int64, device=next(model.parameters()).device)
    with model.hooks(fwd_hooks=[(hook, record)]):
        model(tokens)
    if not seen:
        raise ConfigError(f"hook {hook!r} is not reached by the forward pass")
    return seen[0]


def read(act: Tensor, site: Site) -> Tensor:
    """The site's rows of a hook activation: (B, T, ...) -> (B * P, width), list-major."""
    rows = act[:, list(site.positions)]
    return rows.reshape(rows.shape[0] * rows.shape[1], -1)


def write(act: Tensor, site: Site, rows: Tensor) -> Tensor:
    """A copy of ``act`` with the site's positions replaced by ``rows`` (B * P, width)."""
    out = act.clone()
    pos = list(site.positions)
    out[:, pos] = rows.reshape(act[:, pos].shape).to(act.dtype)
    return out


def splice_hook(site: Site, edit: Callable[[Tensor], Tensor]) -> tuple[str, Callable]:
    """A forward hook on the site that replaces its rows (B * P, width) with ``edit(rows)``."""

    def hook(act: Tensor, hook) -> Tensor:
        return write(act, site, edit(read(act, site)))

    return site.hook, hook
