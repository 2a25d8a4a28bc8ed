"""How good an SAE is, as the research line reports it.

Reconstruction, over activation rows ``x`` (N, d) with latents ``z = encode(x)`` and
``x_hat = decode(z)``:

    l0                  mean number of non-zero latents per row
    mse                 mean over rows and dimensions of (x - x_hat)^2
    explained_variance  1 - sum |x - x_hat|^2 / sum |x - mean(x)|^2  (mean over these rows)
    dead / alive        latents that are zero on every row / the others

Accuracy on the model's output positions, without and with the reconstruction spliced in at the
SAE's site (every other activation untouched): ``baseline_acc``, ``patched_acc``, ``drop``
(baseline - patched), the same per output position and for whole sequences.
"""

from __future__ import annotations

from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from ..task import Dataset, token_labels
from .activations import collect, split_data
from .site import Site, splice_hook

BATCH_SIZE = 4096


@torch.no_grad()
def reconstruct(sae, rows: Tensor) -> Tensor:
    """decode(encode(rows)), in the rows' dtype."""
    return sae.decode(sae.encode(rows)).to(rows.dtype)


@torch.no_grad()
def reconstruction_metrics(sae, acts: Tensor, batch_size: int = BATCH_SIZE) -> dict:
    """l0, mse, explained_variance, dead, alive, d_sae over ``acts`` (N, d); sums in float64."""
    n, d = acts.shape
    mean = acts.double().mean(0)
    err = var = active = 0.0
    fired = torch.zeros(int(sae.cfg.d_sae), dtype=torch.bool, device=acts.device)
    for i in range(0, n, batch_size):
        x = acts[i: i + batch_size]
        z = sae.encode(x)
        x_hat = sae.decode(z)
        err += (x.double() - x_hat.double()).pow(2).sum().item()
        var += (x.double() - mean).pow(2).sum().item()
        nonzero = z != 0
        active += nonzero.sum().item()
        fired |= nonzero.any(0)
    dead = int((~fired).sum())
    return {"l0": active / n, "mse": err / (n * d),
            "explained_variance": 1.0 - err / var if var > 0 else float("nan"),
            "dead": dead, "alive": int(fired.numel()) - dead, "d_sae": int(fired.numel()),
            "n_rows": n}


@torch.no_grad()
def output_accuracy(model, inputs: Tensor, targets: Tensor, fwd_hooks: Sequence = (),
                    batch_size: int = BATCH_SIZE) -> dict:
    """loss, acc, seq_acc and per-position acc on the output positions, with ``fwd_hooks`` on."""
    task = model.config.task
    out = task.output_slice
    device = next(model.parameters()).device
    right_parts, loss_sum = [], 0.0
    with model.hooks(fwd_hooks=list(fwd_hooks)):
        for i in range(0, inputs.shape[0], batch_size):
            logits = model(inputs[i: i + batch_size].to(device))[:, out]
            want = targets[i: i + batch_size, out].to(device)
            right_parts.append((logits.argmax(-1) == want).cpu())
            loss_sum += F.cross_entropy(logits.flatten(0, 1).float(), want.flatten(),
                                        reduction="sum").item()
    right = torch.cat(right_parts)
    names = token_labels(task.list_len)[task.list_len + 1:]
    return {"loss": loss_sum / right.numel(), "acc": right.float().mean().item(),
            "seq_acc": right.all(-1).float().mean().item(),
            "per_position": dict(zip(names, right.float().mean(0).tolist())),
            "n": int(right.shape[0])}


def reconstruction_hook(sae, site: Site) -> tuple[str, Callable]:
    """The forward hook that replaces the site's activations by the SAE's reconstruction."""
    return splice_hook(site, lambda rows: reconstruct(sae, rows))


def patched_accuracy(model, sae, site: Site, inputs: Tensor, targets: Tensor,
                     batch_size: int = BATCH_SIZE) -> dict:
    """Baseline and patched accuracy, their drop, per output position and for whole sequences."""
    base = output_accuracy(model, inputs, targets, (), batch_size)
    patched = output_accuracy(model, inputs, targets, [reconstruction_hook(sae, site)], batch_size)
    return {"baseline_acc": base["acc"], "patched_acc": patched["acc"],
            "drop": base["acc"] - patched["acc"],
            "baseline_seq_acc": base["seq_acc"], "patched_seq_acc": patched["seq_acc"],
            "baseline_loss": base["loss"], "patched_loss": patched["loss"],
            "per_position": {name: {"baseline_acc": base["per_position"][name],
                                    "patched_acc": patched["per_position"][name],
                                    "drop": base["per_position"][name] - patched["per_position"][name]}
                             for name in base["per_position"]},
            "n_lists": base["n"]}


def evaluate_sae(model, sae, site: Site, data: Dataset, split: str = "val",
                 batch_size: int = BATCH_SIZE) -> dict:
    """Reconstruction metrics and patched accuracy on the lists of ``split``."""
    inputs, targets = split_data(data, split)
    acts = collect(model, inputs, site, batch_size)
    return {**reconstruction_metrics(sae, acts, batch_size),
            **patched_accuracy(model, sae, site, inputs, targets, batch_size), "split": split}
