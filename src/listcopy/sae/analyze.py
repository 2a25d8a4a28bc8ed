"""The paper's questions of one SAE on one model, as one JSON-ready result, and its summary.

    metrics     reconstruction and patched accuracy (``evaluate_sae``)
    alignment   each latent's best ``E_d + P_i`` (skipped when the SAE does not read the residual)
    attention   latent activations against alpha_{s->d_i}: graded or binary
    swaps       swapped pairs (a, b) / (b, a): shared latents, magnitude ratios
    steering    one latent scaled: outputs stay, swap or break
"""

from __future__ import annotations

from typing import Sequence

import torch

from ..analysis.common import to_json
from ..config import ConfigError
from ..task import Dataset
from .activations import split_data
from .attention import alpha_correlations
from .directions import decoder_alignment
from .latents import latent_table
from .metrics import evaluate_sae
from .pairs import swap_statistics
from .site import Site
from .steering import FACTORS, MAX_LISTS, steering


def check_latents(latents: Sequence[int] | None, d_sae: int) -> None:
    for j in latents or ():
        if not isinstance(j, int) or isinstance(j, bool) or not 0 <= j < d_sae:
            raise ConfigError(f"latent {j!r}: must be in 0 .. {d_sae - 1}")


def analyze(model, sae, site: Site, data: Dataset, split: str = "val",
            factors: Sequence[float] = FACTORS, latents: Sequence[int] | None = None,
            max_lists: int = MAX_LISTS) -> dict:
    """Every study of the SAE at ``site`` on the lists of ``split`` (steering: alive latents by default)."""
    check_latents(latents, int(sae.cfg.d_sae))
    inputs, targets = split_data(data, split)
    table = latent_table(model, sae, site, inputs, targets)
    alive = (table.z != 0).any(0)
    if int(sae.cfg.d_in) == model.cfg.d_model:
        alignment = decoder_alignment(sae, model, alive)
    else:
        alignment = {"skipped": f"the SAE reads {int(sae.cfg.d_in)}-wide activations, not the"
                                f" {model.cfg.d_model}-wide residual stream"}
    chosen = list(latents) if latents else torch.nonzero(alive).flatten().tolist()
    return to_json({"site": {**site.to_dict(), "analysis_position": table.position},
                    "metrics": evaluate_sae(model, sae, site, data, split),
                    "alignment": alignment,
                    "attention": alpha_correlations(table, alive),
                    "swaps": swap_statistics(table),
                    "steering": steering(model, sae, table, site.hook, chosen, factors, max_lists)})


def format_metrics(m: dict) -> str:
    """One line; '-' for a figure that does not exist (explained variance of rows that do not vary,
    as one validation list: NaN, which the JSON holds as null)."""
    return (f"L0 {_num(m['l0'], '.2f')}, dead {m['dead']}/{m['d_sae']}, MSE {_num(m['mse'], '.4g')},"
            f" explained variance {_num(m['explained_variance'], '.4f')}; acc"
            f" {_num(m['baseline_acc'], '.4f')} -> patched {_num(m['patched_acc'], '.4f')} (drop"
            f" {_num(m['drop'], '+.4f')}; "
            + ", ".join(f"{k} {_num(v['baseline_acc'])}->{_num(v['patched_acc'])}"
                        for k, v in m["per_position"].items()) + ")")


def _num(value: float | None, spec: str = ".3f") -> str:
    return "-" if value is None or value != value else format(value, spec)


def format_summary(result: dict) -> str:
    """A few lines: metrics, alignment, graded/binary, swaps, the latents that swap outputs most."""
    lines = [format_metrics(result["metrics"])]
    a = result["alignment"]
    if "skipped" in a:
        lines.append(f"alignment: skipped ({a['skipped']})")
    else:
        lines.append(f"alignment: {a['n_aligned']} of {a['n_alive']} alive latents have cosine >"
                     f" {a['threshold']:g} with some E_d + P_i (mean best"
                     f" {_num(a['mean_best_cosine'])});"
                     f" {a['directions_covered']:.0%} of the E_d + P_i are matched")
    t = result["attention"]
    if t["max_abs_corr"] is None:  # no alpha varies (one digit: nothing to order)
        lines.append("attention: does not apply (no attention weight alpha varies across lists)")
    else:
        lines.append(f"attention: {t['n_graded']} graded, {t['n_binary']} binary,"
                     f" {t['n_other']} other; max |corr| with alpha {t['max_abs_corr']:.3f};"
                     f" {t['n_special']} latents with |corr(alpha_1 - alpha_2)| > 0.5")
    s = result["swaps"]
    if s.get("n_pairs"):
        lines.append(f"swaps: {s['n_pairs']} pairs, {s['mean_shared']:.2f} of {s['mean_active']:.2f}"
                     f" active latents shared (Jaccard {s['mean_jaccard']:.2f}); ratio median"
                     f" {_num(s['ratio']['median'])}, {_num(s['ratio']['frac_near_one'], '.1%')}"
                     " within 10% of 1")
    else:
        lines.append("swaps: does not apply (no pair of lists that swap two digits)")
    for f, top in result["steering"]["top_swap"].items():
        if top:
            best = top[0]
            lines.append(f"steering x{f}: latent {best['latent']} swaps {best['swap']:.0%}, stays"
                         f" {best['stay']:.0%}, breaks {best['break']:.0%}")
    return "\n".join(lines)
