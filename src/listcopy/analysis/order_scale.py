"""The paper's analyses of one model ("Order by Scale", sections 4.2-4.3 and appendix B) as one
result, the ``order_by_scale`` key of ``listcopy analyze``:

    reconstruction      logits rebuilt as a sum over attention paths (paths.py)
    delta_logits        equation 6, each term's contribution to the gap (decomposition.py)
    alpha_intervention  SEP's weights set, accuracy before and after (intervention.py)
    swapped_pairs       equation 5 on lists and their swapped partners (swapped.py)
    positional_svc      the output residuals separated by position (separability.py)
    attention           per validation list: SEP's layer-0 weights on the digits (alpha), the last
                        output's layer-1 weights (beta), right or wrong: Figures 3 and 4

Each part that does not apply to the model (LayerNorm, learned W_V/W_O, lists of one) holds one
string saying why instead, so the others still run.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import torch

from ..config import Config
from ..task import Dataset, token_labels
from .common import BATCH_SIZE, cached_pass, checked_inputs, pattern_name, to_json
from .decomposition import delta_logits
from .intervention import alpha_intervention
from .paths import NotApplicable, logit_reconstruction
from .separability import positional_svc
from .swapped import sep_alpha, swapped_pairs

PARTS = ("reconstruction", "delta_logits", "alpha_intervention", "swapped_pairs",
         "positional_svc", "attention")


@dataclass(frozen=True, eq=False)
class PaperAttention:
    """Per validation list: alpha (N, L) SEP -> d1..dL at layer 0, beta (N, L) the last output's
    weights on SEP, o1 .. o_{L-1} at layer 1 (None with one layer), digits, right or wrong."""

    alpha_keys: tuple[str, ...]
    beta_keys: tuple[str, ...]
    alpha: torch.Tensor
    beta: torch.Tensor | None
    digits: torch.Tensor
    token_correct: torch.Tensor

    def to_dict(self) -> dict:
        return to_json({"alpha_keys": list(self.alpha_keys), "beta_keys": list(self.beta_keys),
                        "alpha": self.alpha, "beta": self.beta, "digits": self.digits,
                        "token_correct": self.token_correct,
                        "correct": self.token_correct.all(-1)})


@torch.no_grad()
def paper_attention(model, config: Config, data: Dataset | None = None,
                    batch_size: int = BATCH_SIZE) -> PaperAttention:
    data = checked_inputs(model, config, data, batch_size)
    L, n_layers = config.task.list_len, config.model.n_layers
    alpha, right = sep_alpha(model, config, data, 0, batch_size)
    beta = None
    if n_layers > 1:
        name = pattern_name(1)
        beta = torch.cat([acts[name][:, :, 2 * L, L: 2 * L].sum(1).float().cpu() for _, _, acts
                          in cached_pass(model, data.val_inputs, [name], batch_size=batch_size)])
    labels = token_labels(L)
    return PaperAttention(alpha_keys=tuple(labels[:L]), beta_keys=tuple(labels[L: 2 * L]),
                          alpha=alpha.float(), beta=beta, digits=data.val_inputs[:, :L].clone(),
                          token_correct=right)


@dataclass(frozen=True)
class OrderByScaleResult:
    parts: dict[str, Any]  # part name -> its result, or the one-line reason it does not apply

    def to_dict(self) -> dict:
        return {k: v if isinstance(v, str) else to_json(v) for k, v in self.parts.items()}


def _part(fn: Callable[[], Any]) -> Any:
    try:
        return fn()
    except NotApplicable as why:
        return str(why)


@torch.no_grad()
def order_by_scale(model, config: Config, data: Dataset | None = None, umap: bool = False,
                   seed: int = 0, batch_size: int = BATCH_SIZE) -> OrderByScaleResult:
    """Every analysis of the paper's sections 4.2-4.3 on ``model``; see the module docstring."""
    data = checked_inputs(model, config, data, batch_size)
    steps: dict[str, Callable[[], Any]] = {
        "reconstruction": lambda: logit_reconstruction(model, config, data, batch_size),
        "delta_logits": lambda: delta_logits(model, config, data, batch_size=batch_size),
        "alpha_intervention": lambda: alpha_intervention(model, config, data, batch_size=batch_size),
        "swapped_pairs": lambda: swapped_pairs(model, config, data, batch_size=batch_size),
        "positional_svc": lambda: positional_svc(model, config, data, umap, seed, batch_size),
        "attention": lambda: paper_attention(model, config, data, batch_size),
    }
    return OrderByScaleResult({name: _part(steps[name]) for name in PARTS})


# ---- the summary lines of ``listcopy analyze`` ---------------------------------------------------

def svc_margin_text(v: dict) -> str:
    """``margin 0.123`` or, with no hard margin, ``not linearly separable``."""
    return f"margin {v['margin']:.4g}" if v["separable"] else "not linearly separable"


def _accs(values) -> str:
    return " ".join(f"{v:.4f}" for v in values)


def _summary_part(name: str, v: Any) -> list[str]:
    if isinstance(v, str):
        return [f"  {name}: does not apply: {v}"]
    if name == "reconstruction":
        l2 = ", ".join(f"{lab} {x:.2e}" for lab, x in zip(v["labels"], v["mean_l2"]))
        return [f"  paths: mean L2 to the model's logits {l2}; rebuilt acc {v['acc']:.4f} "
                f"(model {v['model_acc']:.4f})"]
    if name == "delta_logits":
        return [f"  delta l {p['first']}->{p['second']}: gap {p['base']:+.2f} -> {p['final']:+.2f} "
                f"(model {p['model_gap']:+.2f}, {p['n']} lists); l_{p['first']} + delta l acc "
                f"{p['acc_rebuilt']:.4f} (model {p['acc_model']:.4f})" for p in v["pairs"]]
    if name == "alpha_intervention":
        f = v["delta_logits"]
        tail = (f"; in delta l only: {f['position']} acc {f['acc_before']:.4f} -> "
                f"{f['acc_after']:.4f}" if isinstance(f, dict) else "")
        return [f"  weights set {v['edits']}: per-position acc "
                f"{_accs(v['before']['per_position_acc'])} -> "
                f"{_accs(v['after']['per_position_acc'])}{tail}"]
    if name == "swapped_pairs":
        e = v["errors_by_gap"]
        auc = "-" if e["auc_small_gap_error"] is None else f"{e['auc_small_gap_error']:.3f}"
        return [f"  swapped pairs ({v['n_pairs']}): larger weight stays with its position in "
                f"{v['position_order_kept']:.1%}; AUC of a small |alpha gap| for an error {auc}"]
    if name == "positional_svc":
        return [f"  positional SVC: accuracy {v['accuracy']:.4f}, " + svc_margin_text(v)]
    return []


def summary_lines(r: dict) -> list[str]:
    """The ``order_by_scale`` result as a few readable lines."""
    lines = ["order by scale:"]
    for name in PARTS:
        if name in r:
            lines += _summary_part(name, r[name])
    return lines
