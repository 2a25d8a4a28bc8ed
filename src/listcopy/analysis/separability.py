"""Positional separability (the paper's section 4.3): the final residuals at the output positions,
projected onto span(W_pos) by least squares, separated by a hard-margin linear SVC.

Each validation list gives one point per output position: its residual after the last layer,
``r``, projected onto the row space of ``W_pos`` (``r W_pos^T (W_pos W_pos^T)^+ W_pos``, the
token-embedding part removed). A linear SVC with ``C = 1e6`` (hard margin, as the paper) is fitted
to tell the positions apart; reported: its accuracy on those points and its geometric margin
``1 / |w|`` (the smallest over the one-vs-one classifiers when there are more than two outputs),
on at most ``MAX_FIT_POINTS`` points (a seeded subsample of a larger validation set).
Separability is decided first by a linear program; a set that is not separable has no hard
margin (``margin`` None, ``separable`` False, the accuracy a soft-margin fit's), which also
spares libsvm its slowest case.
``inner_products`` repeats the fit on the research notebook's features, ``r W_pos^T`` (the
same separation in other coordinates, so the same accuracy but another margin). The points' 2D
PCA (and UMAP with ``umap=True``) are kept for the figure, at most ``MAX_POINTS`` of them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..config import Config
from ..task import Dataset, token_labels
from .common import BATCH_SIZE, cached_pass, checked_inputs, resid_post, to_json
from .paths import NotApplicable

HARD_MARGIN_C = 1e6   # the research notebook's SVC(kernel="linear", C=1e6)
MAX_ITER = 100_000    # libsvm iterations (a separable set needs far fewer)
MAX_POINTS = 2000     # points kept for the figure (a seeded subsample beyond)
MAX_FIT_POINTS = 20_000  # points the SVC is fitted on (a seeded subsample beyond; the paper's: 4,000)


def separable(X: np.ndarray, y: np.ndarray) -> bool:
    """Whether a hyperplane separates the two classes of ``y`` (0/1) strictly: the linear
    program ``y_i (w . x_i + b) >= 1`` is feasible (scipy's HiGHS)."""
    from scipy.optimize import linprog

    s = np.where(y == y.max(), 1.0, -1.0)
    A = -s[:, None] * np.hstack([X, np.ones((len(X), 1))])
    res = linprog(np.zeros(A.shape[1]), A_ub=A, b_ub=-np.ones(len(X)), bounds=(None, None),
                  method="highs")
    return res.status == 0


def fit_svc(X: np.ndarray, y: np.ndarray) -> dict:
    """Accuracy on (X, y) of a linear SVC and, where the classes are separable (each pair, for
    more than two), the hard-margin SVC's geometric margin ``1 / |w|`` (the smallest over the
    one-vs-one classifiers). Where they are not, there is no hard margin: the accuracy is a
    soft-margin LinearSVC's (C = 1) and the margin None."""
    import warnings

    from sklearn.exceptions import ConvergenceWarning
    from sklearn.svm import SVC, LinearSVC

    classes = np.unique(y)
    ok = all(separable(X[(y == a) | (y == b)], y[(y == a) | (y == b)])
             for i, a in enumerate(classes) for b in classes[i + 1:])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        if ok:
            clf = SVC(kernel="linear", C=HARD_MARGIN_C, max_iter=MAX_ITER).fit(X, y)
            margin = float(1.0 / np.linalg.norm(clf.coef_, axis=1).max())
        else:
            clf = LinearSVC(C=1.0, max_iter=10_000).fit(X, y)
            margin = None
    return {"accuracy": float(clf.score(X, y)), "margin": margin, "separable": ok}


def project_on_rows(X: np.ndarray, W: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Points X (N, D) against the rows of W (T, D): the inner products ``X W^T`` (N, T) and the
    least-squares projection onto the rows' span, ``X W^T (W W^T)^+ W`` (N, D)."""
    inner = X @ W.T
    return inner, inner @ np.linalg.pinv(W @ W.T) @ W


def output_residuals(model, config: Config, data: Dataset, layer: int,
                     batch_size: int = BATCH_SIZE) -> np.ndarray:
    """(N, L, D) float64: each list's residual after ``layer`` at o1 .. oL."""
    name = resid_post(layer)
    out = config.task.output_slice
    parts = [acts[name][:, out].double().cpu()
             for _, _, acts in cached_pass(model, data.val_inputs, [name], batch_size=batch_size)]
    return torch.cat(parts).numpy()


def embed_2d(X: np.ndarray, y: np.ndarray, umap: bool, seed: int) -> dict:
    """A seeded subsample of at most ``MAX_POINTS`` points: labels, 2D PCA and UMAP (or None)."""
    from sklearn.decomposition import PCA

    rng = np.random.default_rng(seed)
    keep = np.sort(rng.choice(len(X), MAX_POINTS, replace=False)) if len(X) > MAX_POINTS else None
    Xs, ys = (X, y) if keep is None else (X[keep], y[keep])
    pca = PCA(n_components=2).fit(Xs)
    out = {"label": ys, "pca": pca.transform(Xs), "pca_variance": pca.explained_variance_ratio_,
           "umap": None}
    if umap and len(Xs) > 10:
        from umap import UMAP

        out["umap"] = UMAP(n_components=2, random_state=seed, n_jobs=1).fit_transform(Xs)
    return out


@dataclass(frozen=True, eq=False)
class SeparabilityResult:
    layer: int                       # the residuals after this layer
    labels: tuple[str, ...]          # the classes: o1 .. oL
    projection: dict                 # accuracy, margin on the least-squares projection
    inner_products: dict             # the same on r W_pos^T (the research notebook's features)
    points: dict                     # label, pca (and umap) of the projected points

    def to_dict(self) -> dict:
        return to_json({"layer": self.layer, "labels": list(self.labels), **self.projection,
                        "inner_products": self.inner_products, "points": self.points})


@torch.no_grad()
def positional_svc(model, config: Config, data: Dataset | None = None, umap: bool = False,
                   seed: int = 0, batch_size: int = BATCH_SIZE,
                   max_fit_points: int = MAX_FIT_POINTS,
                   layer: int | None = None) -> SeparabilityResult:
    """The output residuals after ``layer`` (default the last: the paper's final activations; the
    research notebook reads layer 1 whatever the depth) separated by position."""
    layer = config.model.n_layers - 1 if layer is None else layer
    data = checked_inputs(model, config, data, batch_size, layer=layer)
    L = config.task.list_len
    if L < 2:
        raise NotApplicable("lists of 1: one output position, nothing to separate")
    resid = output_residuals(model, config, data, layer, batch_size)   # (N, L, D)
    X_inner, X_proj = project_on_rows(resid.reshape(-1, resid.shape[-1]),
                                      model.W_pos.detach().double().cpu().numpy())
    y = np.tile(np.arange(L), resid.shape[0])
    fit = np.arange(len(y))
    if len(y) > max_fit_points:
        fit = np.sort(np.random.default_rng(seed).choice(len(y), max_fit_points, replace=False))
    return SeparabilityResult(
        layer=layer, labels=tuple(token_labels(L)[L + 1:]),
        projection={**fit_svc(X_proj[fit], y[fit]), "n_points": len(fit)},
        inner_products=fit_svc(X_inner[fit], y[fit]), points=embed_2d(X_proj, y, umap, seed))
