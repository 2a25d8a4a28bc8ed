"""Linear probes: does the residual stream at SEP, after the embedding and after each layer, encode
each input digit linearly?

For every stage and every digit position (d1, d2, ...) a multinomial logistic regression and an
LDA are fitted on training-split activations and scored on validation-split ones: accuracy and
macro one-vs-rest ROC AUC. Activations are centred and whitened on their training-split principal
directions first (LDA does not care; it makes the logistic regression's L2 penalty scale-free), and
a representation with no variance at all (SEP after the embedding is one vector) predicts the
training prior: accuracy of the majority class, AUC 0.5.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from ..config import Config, ConfigError
from ..task import Dataset, token_labels
from .common import BATCH_SIZE, cached_pass, checked_inputs, resid_stages, stage_label, to_json

KINDS = ("logistic", "lda")
MAX_TRAIN = 20_000  # examples per probe fit at most (a seeded subsample beyond)
MAX_VAL = 10_000
RANK_TOL = 1e-5  # singular values below this fraction of the largest count as no variance


@dataclass(frozen=True)
class ProbeScore:
    acc: float
    auc: float | None  # None when no class has both positives and negatives in the scored set

    def to_dict(self) -> dict:
        return to_json({"acc": self.acc, "auc": self.auc})


def macro_auc(y: np.ndarray, scores: np.ndarray, classes: np.ndarray) -> float | None:
    """Macro one-vs-rest ROC AUC (ties count one half), over the classes that have a score column
    and both positives and negatives in ``y``; same as sklearn's ``roc_auc_score(multi_class="ovr",
    average="macro")`` when every class is present."""
    from scipy.stats import rankdata

    y = np.asarray(y)
    ranks = rankdata(scores, axis=0)                        # (N, C) average ranks per column
    pos = (y[:, None] == np.asarray(classes)[None, :])      # (N, C)
    n_pos = pos.sum(0)
    n_neg = len(y) - n_pos
    valid = (n_pos > 0) & (n_neg > 0)
    if not valid.any():
        return None
    rank_sum = (ranks * pos).sum(0)
    auc = (rank_sum - n_pos * (n_pos + 1) / 2.0)[valid] / (n_pos * n_neg)[valid]
    return float(auc.mean())


def _whiten(X_train: np.ndarray, X_val: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """Centre on the training mean, project on the training principal directions with variance,
    scale each to unit variance; None when the training activations have no variance."""
    mean = X_train.mean(0)
    Xc = X_train - mean
    _, s, vt = np.linalg.svd(Xc, full_matrices=False)
    if s.size == 0 or s[0] <= 1e-12 * max(1.0, np.abs(X_train).max()):
        return None
    keep = s > RANK_TOL * s[0]
    scale = s[keep] / np.sqrt(max(len(X_train) - 1, 1))
    proj = vt[keep].T / scale
    return Xc @ proj, (X_val - mean) @ proj


def fit_probe(X_train: np.ndarray, y_train: np.ndarray, X_val: np.ndarray, y_val: np.ndarray,
              kind: str = "logistic", seed: int = 0) -> ProbeScore:
    """Fit one probe on (X_train, y_train) and score it on (X_val, y_val)."""
    from sklearn.discriminant_analysis import LinearDiscriminantAnalysis
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression
    from threadpoolctl import threadpool_limits

    if kind not in KINDS:
        raise ConfigError(f"probe kind {kind!r}: allowed are " + ", ".join(KINDS))
    X_train = np.asarray(X_train, dtype=np.float64)
    X_val = np.asarray(X_val, dtype=np.float64)
    y_train, y_val = np.asarray(y_train), np.asarray(y_val)
    white = _whiten(X_train, X_val)
    n_classes = len(np.unique(y_train))
    too_few = n_classes < 2 or (kind == "lda" and len(y_train) <= n_classes)  # sklearn refuses
    if white is None or too_few:  # nothing to read or fit: predict the training prior
        classes, counts = np.unique(y_train, return_counts=True)
        proba = np.broadcast_to(counts / counts.sum(), (len(y_val), len(classes)))
    else:
        Z_train, Z_val = white
        if kind == "logistic":
            est = LogisticRegression(max_iter=1000, random_state=seed)
        else:
            est = LinearDiscriminantAnalysis()
        # one BLAS thread: these problems are small, and more threads on a busy machine made the
        # default model's eight logistic fits ~6x slower (17 s against 2.6 s) when measured
        with warnings.catch_warnings(), threadpool_limits(limits=1):
            warnings.simplefilter("ignore", ConvergenceWarning)
            warnings.simplefilter("ignore", UserWarning)  # LDA: "Variables are collinear"
            est.fit(Z_train, y_train)
        classes, proba = est.classes_, est.predict_proba(Z_val)
    pred = classes[np.argmax(proba, axis=1)]
    return ProbeScore(acc=float((pred == y_val).mean()), auc=macro_auc(y_val, proba, classes))


@dataclass(frozen=True)
class ProbeRow:
    stage: str        # hook name
    stage_label: str  # embed, L0, ...
    target: str       # d1, d2, ...
    scores: dict[str, ProbeScore]  # kind -> score


@dataclass(frozen=True)
class ProbeResult:
    position: str
    n_train: int
    n_val: int
    rows: tuple[ProbeRow, ...]

    def score(self, stage_label: str, target: str, kind: str = "logistic") -> ProbeScore:
        for r in self.rows:
            if r.stage_label == stage_label and r.target == target:
                return r.scores[kind]
        raise KeyError((stage_label, target))

    def to_dict(self) -> dict:
        return {"position": self.position, "n_train": self.n_train, "n_val": self.n_val,
                "rows": [{"stage": r.stage, "stage_label": r.stage_label, "target": r.target,
                          **{k: s.to_dict() for k, s in r.scores.items()}} for r in self.rows]}


@torch.no_grad()
def sep_residuals(model, config: Config, inputs: Tensor,
                  batch_size: int = BATCH_SIZE) -> dict[str, Tensor]:
    """The residual stream at SEP at every stage (embed, after each layer): name -> (N, D)."""
    stages = resid_stages(config.model.n_layers)
    L = config.task.list_len
    parts: dict[str, list[Tensor]] = {s: [] for s in stages}
    for _, _, acts in cached_pass(model, inputs, stages, batch_size=batch_size):
        for s in stages:
            parts[s].append(acts[s][:, L].float().cpu())
    return {s: torch.cat(p) for s, p in parts.items()}


def _subsample(n: int, limit: int, gen: torch.Generator) -> Tensor:
    return torch.arange(n) if n <= limit else torch.randperm(n, generator=gen)[:limit].sort().values


@torch.no_grad()
def linear_probes(model, config: Config, data: Dataset | None = None,
                  kinds: tuple[str, ...] = KINDS, seed: int = 0, max_train: int = MAX_TRAIN,
                  max_val: int = MAX_VAL, batch_size: int = BATCH_SIZE) -> ProbeResult:
    """Probes for each digit from the residual stream at SEP after the embedding and each layer."""
    data = checked_inputs(model, config, data, batch_size)
    for kind in kinds:
        if kind not in KINDS:
            raise ConfigError(f"probe kind {kind!r}: allowed are " + ", ".join(KINDS))
    if max_train < 2 or max_val < 1:
        raise ConfigError(f"max_train = {max_train}, max_val = {max_val}: need >= 2 and >= 1")
    gen = torch.Generator().manual_seed(seed)
    tr = _subsample(data.train_inputs.shape[0], max_train, gen)
    va = _subsample(data.val_inputs.shape[0], max_val, gen)
    x_train, x_val = data.train_inputs[tr], data.val_inputs[va]
    res_train = sep_residuals(model, config, x_train, batch_size)
    res_val = sep_residuals(model, config, x_val, batch_size)
    L = config.task.list_len
    targets = token_labels(L)[:L]
    rows = []
    for stage in resid_stages(config.model.n_layers):
        for i, target in enumerate(targets):
            scores = {kind: fit_probe(res_train[stage].numpy(), x_train[:, i].numpy(),
                                      res_val[stage].numpy(), x_val[:, i].numpy(), kind, seed)
                      for kind in kinds}
            rows.append(ProbeRow(stage, stage_label(stage), target, scores))
    return ProbeResult(position=token_labels(L)[L], n_train=len(tr), n_val=len(va), rows=tuple(rows))
