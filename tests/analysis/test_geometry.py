import math

import numpy as np
import pytest
import torch

from listcopy.analysis.geometry import (angle_stats, embedding_geometry, embedding_matrices,
                                        nearest_angles, pairwise_angles, pca, umap_coords)


def test_pairwise_angles_of_known_vectors():
    X = torch.tensor([[1.0, 0, 0], [0, 2.0, 0], [1.0, 1.0, 0], [-3.0, 0, 0]])
    A = pairwise_angles(X)
    want = torch.tensor([[0, 90, 45, 180], [90, 0, 45, 90], [45, 45, 0, 135], [180, 90, 135, 0.0]])
    assert torch.allclose(A, want, atol=1e-4)
    near = nearest_angles(A)
    assert torch.allclose(near, torch.tensor([[45.0, 90], [45, 90], [45, 45], [90, 135]]), atol=1e-4)
    s = angle_stats(X)
    vals = np.array([45, 90, 45, 90, 45, 45, 90, 135.0])
    assert s.nearest_mean == pytest.approx(vals.mean(), abs=1e-4)
    assert s.nearest_std == pytest.approx(vals.std(), abs=1e-4)


def test_regular_polygon_has_equal_neighbour_angles():
    n = 12
    t = torch.arange(n) * 2 * math.pi / n
    s = angle_stats(torch.stack([t.cos(), t.sin()], 1))
    assert s.nearest_mean == pytest.approx(30.0, abs=1e-3) and s.nearest_std < 1e-3


def test_pca_matches_an_svd():
    X = torch.randn(50, 6, generator=torch.Generator().manual_seed(0)) * torch.tensor([5, 3, 2, 1, .5, .1])
    r = pca(X)
    s = torch.linalg.svdvals(X.double() - X.double().mean(0))
    assert torch.allclose(r.explained_variance_ratio.double(), s**2 / (s**2).sum(), atol=1e-5)
    assert r.coords.shape == (50, 3)
    assert torch.allclose(r.coords.double().pow(2).sum(0), s[:3] ** 2, rtol=1e-4)


def test_geometry_without_umap(trained):
    model, config, data = trained
    g = embedding_geometry(model, config, umap=False)
    mats = embedding_matrices(model, config)
    assert torch.equal(mats["W_E"], model.W_E[:20].detach())
    assert torch.equal(mats["W_U"], model.W_U[:, :20].T.detach())
    assert g.umap is None and set(g.pca) == {"W_E", "W_U", "W_pos"}
    assert g.angles["W_E"].pairwise.shape == (20, 20) and g.angles["W_pos"].nearest.shape == (5, 2)
    assert g.pca["W_pos"].explained_variance_ratio.shape == (5,)
    d = g.to_dict()
    assert d["umap"] is None and len(d["angles"]["W_U"]["pairwise"]) == 20


@pytest.mark.slow
def test_umap_is_seeded_and_handles_small_sets():
    X = torch.randn(30, 8, generator=torch.Generator().manual_seed(0))
    a, b = umap_coords(X, 2, seed=0), umap_coords(X, 2, seed=0)
    assert a.shape == (30, 2) and torch.equal(a, b)
    assert umap_coords(X, 3, seed=1).shape == (30, 3)
    assert umap_coords(X[:5], 3).shape == (5, 3)   # n_neighbors shrinks, random init
    assert umap_coords(X[:3], 2) is None
    assert torch.isfinite(umap_coords(X[:4], 2)).all()
