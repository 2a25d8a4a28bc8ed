"""Geometry of the embeddings: PCA of the digit rows of ``W_E``, the digit columns of ``W_U`` and
``W_pos``; UMAP (2D and 3D) of ``W_E`` and ``W_U^T``; pairwise angles and each vector's angles
to its two nearest neighbours (the research line's spacing analysis).

UMAP is seeded (``random_state``), which also makes it single-threaded and deterministic. Its first
call in a process pays numba's JIT compilation (about 10 s, plus about 2 s to import umap-learn).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from ..config import Config, ConfigError
from .common import check_model, to_json

N_NEIGHBOURS = 2   # the research line's "two nearest neighbours"
UMAP_NEIGHBOURS = 15  # umap-learn's default n_neighbors


def embedding_matrices(model, config: Config) -> dict[str, Tensor]:
    """``W_E`` digit rows (N, D), ``W_U`` digit columns as rows (N, D), ``W_pos`` (T, D)."""
    n = config.task.n_digits
    return {"W_E": model.W_E.detach()[:n].float().cpu(),
            "W_U": model.W_U.detach()[:, :n].T.float().cpu(),
            "W_pos": model.W_pos.detach().float().cpu()}


# ---- PCA -------------------------------------------------------------------------------------

@dataclass(frozen=True, eq=False)
class PCAResult:
    explained_variance_ratio: Tensor  # (k,) every component, k = min(n, D)
    coords: Tensor                    # (n, min(k, n_coords)) on the first components

    def to_dict(self) -> dict:
        return to_json({"explained_variance_ratio": self.explained_variance_ratio,
                        "coords": self.coords})


def pca(X: Tensor, n_coords: int = 3) -> PCAResult:
    """PCA of the rows of ``X`` (n, D), centred; sklearn's sign convention (deterministic)."""
    from sklearn.decomposition import PCA

    data = X.double().numpy()
    k = min(data.shape)
    fit = PCA(n_components=k, svd_solver="full").fit(data)
    coords = fit.transform(data)[:, : min(k, n_coords)]
    ratio = np.nan_to_num(fit.explained_variance_ratio_, nan=0.0)  # all-equal rows: no variance
    return PCAResult(torch.from_numpy(ratio).float(), torch.from_numpy(coords).float())


# ---- angles ----------------------------------------------------------------------------------

def pairwise_angles(X: Tensor) -> Tensor:
    """Angles in degrees between the rows of ``X`` (n, D), (n, n), zero on the diagonal."""
    x = X.double()
    x = x / x.norm(dim=1, keepdim=True).clamp_min(1e-300)
    angles = torch.rad2deg(torch.arccos((x @ x.T).clamp(-1.0, 1.0)))
    angles.fill_diagonal_(0.0)
    return angles.float()


def nearest_angles(angles: Tensor, k: int = N_NEIGHBOURS) -> Tensor:
    """Each row's ``k`` smallest angles to the other rows, ascending, (n, min(k, n - 1))."""
    n = angles.shape[0]
    off = angles.double() + torch.diag(torch.full((n,), float("inf"), dtype=torch.float64))
    return off.sort(dim=1).values[:, : min(k, n - 1)].float()


@dataclass(frozen=True, eq=False)
class AngleStats:
    pairwise: Tensor  # (n, n) degrees
    nearest: Tensor   # (n, 2) each vector's angles to its two nearest neighbours

    @property
    def nearest_mean(self) -> float:
        return float(self.nearest.double().mean()) if self.nearest.numel() else float("nan")

    @property
    def nearest_std(self) -> float:
        """Population std (numpy's), as the research line prints it."""
        return float(self.nearest.double().std(unbiased=False)) if self.nearest.numel() else float("nan")

    def to_dict(self) -> dict:
        return to_json({"pairwise": self.pairwise, "nearest": self.nearest,
                        "nearest_mean": self.nearest_mean, "nearest_std": self.nearest_std})


def angle_stats(X: Tensor, k: int = N_NEIGHBOURS) -> AngleStats:
    angles = pairwise_angles(X)
    return AngleStats(angles, nearest_angles(angles, k))


# ---- UMAP ------------------------------------------------------------------------------------

def umap_coords(X: Tensor, n_components: int, seed: int = 0,
                n_neighbors: int = UMAP_NEIGHBOURS) -> Tensor | None:
    """UMAP of the rows of ``X`` (n, D) to ``n_components`` dims, seeded; None when n < 4."""
    n = X.shape[0]
    if n < 4:
        return None
    import umap  # deferred: importing it costs about 2 s, its first fit about 10 s of JIT

    init = "spectral" if n > n_components + 2 else "random"
    reducer = umap.UMAP(n_components=n_components, n_neighbors=min(n_neighbors, n - 1),
                        random_state=seed, init=init)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "n_jobs overridden by random_state", small-graph notes
        coords = reducer.fit_transform(X.numpy().astype(np.float32))
    return torch.from_numpy(np.asarray(coords, dtype=np.float32))


# ---- the analysis ----------------------------------------------------------------------------

@dataclass(frozen=True, eq=False)
class GeometryResult:
    pca: dict[str, PCAResult]             # W_E, W_U, W_pos
    angles: dict[str, AngleStats]         # W_E, W_U, W_pos
    umap: dict[str, dict[str, Tensor | None]] | None  # W_E, W_U -> {"2d", "3d"}; None if skipped
    seed: int

    def to_dict(self) -> dict:
        umap = None if self.umap is None else {
            name: {dim: to_json(c) for dim, c in coords.items()} for name, coords in self.umap.items()}
        return {"pca": {k: v.to_dict() for k, v in self.pca.items()},
                "angles": {k: v.to_dict() for k, v in self.angles.items()},
                "umap": umap, "umap_seed": self.seed}


@torch.no_grad()
def embedding_geometry(model, config: Config, umap: bool = True,
                       seed: int = 0) -> GeometryResult:
    """PCA and angles of ``W_E`` / ``W_U`` digits and ``W_pos``; seeded UMAP unless ``umap=False``."""
    check_model(model, config)
    if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
        raise ConfigError(f"seed = {seed!r}: must be an integer >= 0")
    mats = embedding_matrices(model, config)
    umaps = None
    if umap:
        umaps = {name: {"2d": umap_coords(mats[name], 2, seed), "3d": umap_coords(mats[name], 3, seed)}
                 for name in ("W_E", "W_U")}
    return GeometryResult(pca={k: pca(v) for k, v in mats.items()},
                          angles={k: angle_stats(v) for k, v in mats.items()}, umap=umaps, seed=seed)
