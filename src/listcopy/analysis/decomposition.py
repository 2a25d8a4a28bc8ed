"""The delta-logit decomposition (the paper's equation 6 and Figure 2): the logits at one output
position as the previous output's logits plus a sum of terms, each a path coefficient times a
fixed vector, and each term's contribution to the gap between the two positions' targets.

For consecutive outputs a = o_j and b = o_{j+1}, with the path coefficients ``C`` of
:mod:`.paths` and ``dc = C[b] - C[a]``: ``l_b = l_a + sum_s dc[s] x[s] W_U``. The terms, in the
paper's order: ``P(o_b)`` and each earlier output's ``P(o_i)`` (``dc`` times the positional
embedding), ``D1 .. DL`` (``dc`` times ``E_di + P_di``), ``S`` (SEP's ``E + P``) and ``E(out)``
(the output positions' token embedding, MASK in the paper). For the paper's 2-layer model
(list_len 2) the coefficients are its ``1, -beta_{o2->s}, -beta_{o2->o1} alpha_{s->d1},
-beta_{o2->o1} alpha_{s->d2}, -beta_{o2->o1}, +beta_{o2->o1}``; here they are whatever the paths
give, for any number of layers. A term's contribution is the mean over validation lists whose
two targets differ of ``term[target_b] - term[target_a]``; ``base`` is that gap in ``l_a``.

``edits`` (as :func:`.pattern_edits.pattern_hooks` takes) change the patterns the decomposition
uses, not the model: the paper's "alpha_{s->d1} = 0, alpha_{s->d2} = 1 in delta l" experiment.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

import torch
from torch import Tensor

from ..config import Config
from ..task import Dataset, token_labels
from .common import BATCH_SIZE, cached_pass, checked_inputs, pattern_name, to_json
from .paths import NotApplicable, check_linear, path_coefficients, source_vectors, stacked_patterns
from .pattern_edits import Edge, pattern_hooks


def term_labels(list_len: int, b: int) -> list[str]:
    """Labels of the terms of the pair ending at output index ``b`` (0-based), paper's order."""
    outs = [f"P(o{i + 1})" for i in range(b, -1, -1)]
    return outs + [f"D{i + 1}" for i in range(list_len)] + ["S", "E(out)"]


def term_vectors(model, tokens: Tensor, dc: Tensor, list_len: int, b: int) -> tuple[Tensor, Tensor]:
    """(n_terms, B, D) term vectors and (n_terms, B) coefficients for ``dc`` (B, T) float64."""
    L = list_len
    W_E, W_pos = model.W_E.detach().double(), model.W_pos.detach().double()
    x = source_vectors(model, tokens)
    outs = list(range(L + 1 + b, L, -1))  # o_b, o_{b-1}, .., o1 (absolute positions)
    vecs = [dc[:, t, None] * W_pos[t] for t in outs]
    vecs += [dc[:, s, None] * x[:, s] for s in range(L + 1)]
    vecs.append(sum(dc[:, t, None] * W_E[tokens[:, t]] for t in outs))
    coefs = [dc[:, t] for t in outs] + [dc[:, s] for s in range(L + 1)] + [dc[:, outs].sum(1)]
    return torch.stack(vecs), torch.stack(coefs)


@dataclass(frozen=True)
class PairResult:
    first: str                          # "o1"
    second: str                         # "o2"
    n: int                              # lists whose two targets differ (the gap's lists)
    labels: tuple[str, ...]
    coefficient: tuple[float, ...]      # mean path coefficient of each term
    individual: tuple[float, ...]       # mean contribution of each term to the gap
    base: float                         # the gap in the first position's logits
    model_gap: float                    # the gap in the model's logits at the second position
    acc_model: float                    # the model's accuracy at the second position (all lists)
    acc_rebuilt: float                  # accuracy of l_first + delta l there (all lists)

    @property
    def cumulative(self) -> list[float]:
        out, total = [], self.base
        for v in self.individual:
            total += v
            out.append(total)
        return out

    def to_dict(self) -> dict:
        return to_json({
            "first": self.first, "second": self.second, "n": self.n, "base": self.base,
            "terms": [{"label": lab, "coefficient": c, "individual": v, "cumulative": cum}
                      for lab, c, v, cum in zip(self.labels, self.coefficient, self.individual,
                                                self.cumulative)],
            "final": self.cumulative[-1] if self.individual else self.base,
            "model_gap": self.model_gap, "acc_model": self.acc_model,
            "acc_rebuilt": self.acc_rebuilt})


@dataclass(frozen=True)
class DeltaLogitsResult:
    pairs: tuple[PairResult, ...]       # (o1, o2), (o2, o3), ...
    edits: tuple[tuple[Edge, float], ...] = ()

    def to_dict(self) -> dict:
        return to_json({"pairs": [p.to_dict() for p in self.pairs],
                        "edits": [[*e, v] for e, v in self.edits]})


class _PairSums:
    """Running float64 sums of one pair's statistics over the batches."""

    def __init__(self, n_terms: int):
        self.n = 0
        self.n_all = 0
        self.coef = torch.zeros(n_terms, dtype=torch.float64)
        self.contrib = torch.zeros(n_terms, dtype=torch.float64)
        self.base = 0.0
        self.model_gap = 0.0
        self.hits_model = 0
        self.hits_rebuilt = 0

    def add(self, vecs, coefs, W_U, la, lb, ta, tb, rebuilt_b) -> None:
        differ = ta != tb
        u = (W_U[:, tb] - W_U[:, ta]).T[differ]  # (n, D): the gap's direction in the residual
        self.n += int(differ.sum())
        self.n_all += ta.shape[0]
        self.coef += coefs[:, differ].sum(1).cpu()
        self.contrib += (vecs[:, differ] * u).sum(-1).sum(1).cpu()

        def gap(lo: Tensor) -> Tensor:
            return (lo.gather(1, tb[:, None]) - lo.gather(1, ta[:, None]))[differ, 0]

        self.base += float(gap(la).sum())
        self.model_gap += float(gap(lb).sum())
        self.hits_model += int((lb.argmax(-1) == tb).sum())
        self.hits_rebuilt += int((rebuilt_b.argmax(-1) == tb).sum())

    def result(self, first: str, second: str, labels: list[str]) -> PairResult:
        n = max(self.n, 1)
        return PairResult(first, second, self.n, tuple(labels), tuple((self.coef / n).tolist()),
                          tuple((self.contrib / n).tolist()), self.base / n, self.model_gap / n,
                          self.hits_model / max(self.n_all, 1), self.hits_rebuilt / max(self.n_all, 1))


def edit_patterns(patterns: Tensor, edits: Mapping[Edge, float] | None) -> Tensor:
    """(n_layers, B, H, T, T) with ``edits`` written in by the same hooks the model would use."""
    if not edits:
        return patterns
    patterns = patterns.clone()
    for name, hook in pattern_hooks(edits):
        layer = int(name.split(".")[1])
        patterns[layer] = hook(patterns[layer], None)
    return patterns


@torch.no_grad()
def delta_logits(model, config: Config, data: Dataset | None = None,
                 edits: Mapping[Edge, float] | None = None,
                 batch_size: int = BATCH_SIZE) -> DeltaLogitsResult:
    """Equation 6 for every consecutive pair of output positions, over the validation set."""
    data = checked_inputs(model, config, data, batch_size)
    check_linear(model)
    L, n_layers = config.task.list_len, config.model.n_layers
    if L < 2:
        raise NotApplicable("lists of 1: there is no second output position to decompose")
    W_U = model.W_U.detach().double()
    sums = [_PairSums(len(term_labels(L, b))) for b in range(1, L)]
    names = [pattern_name(layer) for layer in range(n_layers)]
    start = 0
    for tokens, logits, acts in cached_pass(model, data.val_inputs, names, batch_size=batch_size):
        targets = data.val_targets[start: start + tokens.shape[0]].to(logits.device)
        start += tokens.shape[0]
        C = path_coefficients(edit_patterns(stacked_patterns(acts, n_layers), edits))
        logits = logits.double()
        for b in range(1, L):
            pa, pb = L + b, L + 1 + b  # absolute positions of o_b and o_{b+1} (0-based b)
            dc = C[:, pb] - C[:, pa]
            vecs, coefs = term_vectors(model, tokens.to(C.device), dc, L, b)
            rebuilt = logits[:, pa] + vecs.sum(0) @ W_U
            sums[b - 1].add(vecs, coefs, W_U, logits[:, pa], logits[:, pb], targets[:, pa],
                            targets[:, pb], rebuilt)
    outs = token_labels(L)[L + 1:]
    return DeltaLogitsResult(
        pairs=tuple(s.result(outs[b - 1], outs[b], term_labels(L, b)) for b, s in enumerate(sums, 1)),
        edits=tuple(sorted((edits or {}).items())))
