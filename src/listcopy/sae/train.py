"""Training one SAE on activation rows with SAELens: its SAE classes, its trainer, our data.

``fit_sae(acts, config)`` builds SAELens' training SAE for ``config.arch`` (initialised under
``torch.manual_seed(config.seed)`` in a forked RNG, so the caller's random state is untouched),
starts its decoder bias at the rows' mean (the line centred its activations the same way), and
runs SAELens' ``SAETrainer`` for ``config.steps`` steps on :class:`ActivationBatches`. The loop
is ``SAETrainer.fit``'s own, through the seams it documents for outside coordinators
(``maybe_reset_sparsity``, ``step``, ``set_final_sae_metadata``), without Weights & Biases and
with a progress bar only when asked. The result is converted to SAELens' inference SAE exactly as
its ``save_inference_model`` does (BatchTopK becomes JumpReLU with the learned threshold).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from ..errors import Failure
from ..training import resolve_device
from .activations import ActivationBatches
from .config import SAEConfig
from .io import sae_lens

LOG_EVERY = 100  # steps between the losses kept in the history


class SAEDiverged(Failure):
    """Training reached a non-finite loss: the input was fine, the run failed (exit status 1)."""


def build_training_sae(config: SAEConfig, d_in: int, metadata: dict[str, Any] | None = None):
    """SAELens' training SAE of ``config.arch`` for ``d_in``-wide rows, on the CPU."""
    sae_lens()
    from sae_lens.registry import get_sae_training_class
    from sae_lens.saes.sae import SAEMetadata

    sae_cls, cfg_cls = get_sae_training_class(config.arch)
    extra = {"batchtopk": {"k": config.k}, "topk": {"k": config.k},
             "jumprelu": {"l0_coefficient": config.l0_coefficient},
             "standard": {"l1_coefficient": config.l1_coefficient}}[config.arch]
    cfg = cfg_cls(d_in=d_in, d_sae=config.d_sae, device="cpu",
                  metadata=SAEMetadata(**(metadata or {})), **extra)
    return sae_cls(cfg)


def to_inference(training_sae):
    """The inference SAE SAELens would save for ``training_sae`` (same device, copied weights)."""
    lens = sae_lens()
    state = {k: v.detach().clone() for k, v in training_sae.state_dict().items()}
    training_sae.process_state_dict_for_saving_inference(state)
    sae = lens.SAE.from_dict(training_sae.cfg.get_inference_sae_cfg_dict())
    sae.load_state_dict(state)
    return sae.eval()


def fit_sae(acts: Tensor, config: SAEConfig, metadata: dict[str, Any] | None = None,
            progress: bool = False) -> tuple[Any, dict[str, Any]]:
    """Train on ``acts`` (N, d): (inference SAE, training record: losses, history, dead latents)."""
    sae_lens()
    from sae_lens.config import LoggingConfig, SAETrainerConfig
    from sae_lens.training.sae_trainer import SAETrainer

    device = resolve_device(config.device)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        sae = build_training_sae(config, acts.shape[1], metadata)
    with torch.no_grad():
        sae.b_dec.copy_(acts.double().mean(0).to(sae.b_dec.dtype))
    sae.to(device)
    batches = ActivationBatches(acts.to(device), config.batch_size, config.seed)
    window = min(1000, max(10, config.steps // 5))
    trainer = SAETrainer(SAETrainerConfig(
        total_training_samples=config.steps * batches.batch_size,
        train_batch_size_samples=batches.batch_size, lr=config.lr, lr_end=config.lr,
        lr_warm_up_steps=config.warmup_steps, device=str(device), dead_feature_window=window,
        feature_sampling_window=window, logger=LoggingConfig(log_to_wandb=False)),
        sae, batches)
    history = _run(trainer, batches, config.steps, progress)
    trainer.set_final_sae_metadata()
    record = {"steps": config.steps, "batch_size": batches.batch_size, "n_rows": int(acts.shape[0]),
              "final": history[-1], "history": history,
              "dead_in_training": int(trainer.dead_neurons.sum())}
    return to_inference(sae), record


def _run(trainer, batches: ActivationBatches, steps: int, progress: bool) -> list[dict]:
    """SAETrainer.fit's loop; keeps the losses every LOG_EVERY steps and at the last one."""
    from tqdm.auto import tqdm

    history: list[dict] = []
    for step in tqdm(range(steps), desc="SAE", disable=not progress, leave=False):
        trainer.maybe_reset_sparsity()
        out = trainer.step(next(batches))
        trainer.n_training_steps += 1
        if (step + 1) % LOG_EVERY == 0 or step + 1 == steps:
            losses = {k: float(v.detach()) for k, v in out.losses.items()}
            l0 = (out.feature_acts != 0).float().sum(-1).mean().item()
            history.append({"step": step + 1, "loss": float(out.loss.detach()), "l0": l0, **losses})
            if not all(map(_finite, history[-1].values())):
                raise SAEDiverged(f"SAE training diverged: non-finite loss at step {step + 1}")
    return history


def _finite(x: float) -> bool:
    return x == x and abs(x) != float("inf")
