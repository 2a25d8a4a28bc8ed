"""The settings of one SAE training run: where it reads, which architecture, how it trains.

``SAEConfig`` is frozen and validated once at construction; every problem is one ``ConfigError``
naming the key (``sae.k = 200: must be at most sae.d_sae = 100``). The hook and positions are
checked against the model when the run starts (they depend on its shape).

    arch        batchtopk (saved as JumpReLU, as SAELens does), topk, jumprelu, standard (L1)
    k           active latents per row (topk) or per row on average over a batch (batchtopk)
    l1_coefficient / l0_coefficient   the sparsity penalty of standard / jumprelu

The training defaults (lr 1e-3, 10,000 steps of 1,024 rows) kept a BatchTopK SAE (d_sae 100, k 4)
on the SEP residual of a 2-layer d_model 64 model within 3.5 points of its accuracy; the line's
learning rate and batch (3e-4, 4,096) lost 8 points in 5,000 steps.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, fields
from typing import Any, Mapping

from ..config import DEVICES, ConfigError, _check, _check_types
from .site import DEFAULT_HOOK

ARCHS = ("batchtopk", "topk", "jumprelu", "standard")
TOPK_ARCHS = ("batchtopk", "topk")
SPLITS = ("train", "val", "all")


@dataclass(frozen=True)
class SAEConfig:
    hook: str = DEFAULT_HOOK
    positions: str = "SEP"
    arch: str = "batchtopk"
    d_sae: int = 100
    k: int = 4
    l1_coefficient: float = 1.0
    l0_coefficient: float = 1.0
    lr: float = 1e-3
    warmup_steps: int = 0
    steps: int = 10_000
    batch_size: int = 1024
    seed: int = 0
    split: str = "train"
    device: str = "auto"

    def __post_init__(self) -> None:
        _check_types(self, "sae")
        _check(self.arch in ARCHS, "sae.arch", self.arch, "one of " + ", ".join(ARCHS))
        _check(self.d_sae >= 1, "sae.d_sae", self.d_sae, "an integer >= 1")
        _check(self.k >= 1, "sae.k", self.k, "an integer >= 1")
        _check(self.k <= self.d_sae or self.arch not in TOPK_ARCHS, "sae.k", self.k,
               f"at most sae.d_sae = {self.d_sae}")
        for key in ("l1_coefficient", "l0_coefficient"):
            _check(getattr(self, key) >= 0, f"sae.{key}", getattr(self, key), ">= 0")
        _check(0 < self.lr <= 10, "sae.lr", self.lr, "in (0, 10]")
        _check(self.warmup_steps >= 0, "sae.warmup_steps", self.warmup_steps, "an integer >= 0")
        _check(self.steps >= 1, "sae.steps", self.steps, "an integer >= 1")
        _check(self.warmup_steps < self.steps, "sae.warmup_steps", self.warmup_steps,
               f"less than sae.steps = {self.steps}")
        _check(self.batch_size >= 1, "sae.batch_size", self.batch_size, "an integer >= 1")
        _check(self.seed >= 0, "sae.seed", self.seed, "an integer >= 0")
        _check(self.split in SPLITS, "sae.split", self.split, "one of " + ", ".join(SPLITS))
        _check(self.device.split(":")[0] in DEVICES, "sae.device", self.device,
               "one of " + ", ".join(DEVICES))
        _check(bool(self.hook.strip()), "sae.hook", self.hook, "a hook name")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "SAEConfig":
        if not isinstance(data, Mapping):
            raise ConfigError(f"SAE config must be a table, got {type(data).__name__}")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"unknown SAE setting sae.{unknown[0]}: allowed are "
                              + ", ".join(sorted(known)))
        return cls(**dict(data))

    def replace(self, **changes: Any) -> "SAEConfig":
        return dataclasses.replace(self, **changes)

    @property
    def name(self) -> str:
        """``batchtopk-d100-k4-seed0``: what a result directory is called by default."""
        sparsity = f"k{self.k}" if self.arch in TOPK_ARCHS else (
            f"l1-{self.l1_coefficient:g}" if self.arch == "standard" else f"l0-{self.l0_coefficient:g}")
        return f"{self.arch}-d{self.d_sae}-{sparsity}-seed{self.seed}"
