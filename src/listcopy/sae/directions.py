"""Decoder directions against the paper's basis: each latent's best match among ``E_d + P_i``.

Equation 7 writes SEP's residual after layer 0 as ``sum_i alpha_{s->d_i} (E_{d_i} + P_i) + E_s + P_s``,
so an SAE there should learn latents along ``D = E_d + P_i`` (digit ``d`` at input position ``i``).
For every latent: the (signed) cosine of its decoder row with every ``E_d + P_i``, the best match,
and for contrast its best cosine with a token embedding ``E_d`` alone and a position ``P_i`` alone.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from ..config import ConfigError

ALIGNED = 0.9  # a cosine above this counts as a match


def digit_position_directions(model) -> Tensor:
    """``E_d + P_i`` for every digit d and input position i: (list_len, n_digits, d_model)."""
    task = model.config.task
    E = model.W_E[: task.n_digits].detach().float()
    P = model.W_pos[: task.list_len].detach().float()
    return P[:, None, :] + E[None, :, :]


def _unit_rows(x: Tensor) -> Tensor:
    return F.normalize(x.reshape(-1, x.shape[-1]), dim=-1)


@torch.no_grad()
def decoder_alignment(sae, model, alive: Tensor | None = None, aligned: float = ALIGNED) -> dict:
    """Per latent: best ``E_d + P_i`` match (digit, position, cosine); a summary over alive latents."""
    task = model.config.task
    d_model = model.cfg.d_model
    if int(sae.cfg.d_in) != d_model:
        raise ConfigError(f"decoder directions are compared in the residual stream (d_model"
                          f" {d_model}); this SAE reads {int(sae.cfg.d_in)}-wide activations")
    W = _unit_rows(sae.W_dec.detach().float().cpu())                   # (d_sae, D)
    D = digit_position_directions(model).cpu()
    cos = W @ _unit_rows(D).T                                          # (d_sae, L * n)
    best, index = cos.max(1)
    tok = (W @ _unit_rows(model.W_E[: task.n_digits].detach().float().cpu()).T).max(1).values
    pos = (W @ _unit_rows(model.W_pos[: task.list_len].detach().float().cpu()).T).max(1).values
    alive = torch.ones(W.shape[0], dtype=torch.bool) if alive is None else alive.cpu()
    n = task.n_digits
    latents = [{"latent": j, "alive": bool(alive[j]), "digit": int(index[j] % n),
                "position": f"d{int(index[j] // n) + 1}", "cosine": float(best[j]),
                "token_cosine": float(tok[j]), "position_cosine": float(pos[j])}
               for j in range(W.shape[0])]
    live = best[alive]
    covered = (cos[alive] > aligned).any(0) if alive.any() else torch.zeros(cos.shape[1], dtype=torch.bool)
    return {"latents": latents, "threshold": aligned,
            "n_alive": int(alive.sum()),
            "n_aligned": int((live > aligned).sum()),
            "mean_best_cosine": float(live.mean()) if live.numel() else None,
            "directions_covered": float(covered.float().mean())}
