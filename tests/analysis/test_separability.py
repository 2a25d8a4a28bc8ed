"""Positional separability: the projection against its definition, the hard margin of points
whose margin is known, a set no line separates, and a trained model's outputs."""

import numpy as np
import pytest
import torch

from listcopy import Config
from listcopy.analysis.paths import NotApplicable
from listcopy.analysis.separability import fit_svc, positional_svc, project_on_rows, separable
from listcopy.model import build_model


def test_projection_onto_the_rows():
    rng = np.random.default_rng(0)
    W = rng.normal(size=(5, 8))
    X = rng.normal(size=(30, 8))
    inner, proj = project_on_rows(X, W)
    assert np.allclose(inner, X @ W.T)
    assert np.allclose((X - proj) @ W.T, 0, atol=1e-10)       # what is left is orthogonal to W
    coef, *_ = np.linalg.lstsq(W.T, proj.T, rcond=None)
    assert np.allclose(W.T @ coef, proj.T, atol=1e-10)           # and the projection is in span(W)


@pytest.mark.parametrize("half_gap", [1.0, 2.5])
def test_hard_margin_of_known_points(half_gap):
    X = np.array([[-half_gap, 0], [half_gap, 0], [-half_gap, 3], [half_gap, -2], [-3, 1], [4, 1]])
    y = np.array([0, 1, 0, 1, 0, 1])
    r = fit_svc(X, y)
    assert r == {"accuracy": 1.0, "margin": pytest.approx(half_gap, rel=1e-3), "separable": True}


def test_xor_is_not_separable():
    X = np.array([[0, 0], [1, 1], [0, 1], [1, 0]], dtype=float)
    y = np.array([0, 0, 1, 1])
    assert not separable(X, y)
    r = fit_svc(X, y)
    assert r["separable"] is False and r["margin"] is None and r["accuracy"] <= 0.75


def test_three_classes_take_the_smallest_pairwise_margin():
    X = np.array([[0.0, 0], [0, 1], [2, 0], [2, 1], [2.5, 0], [2.5, 1]])
    y = np.array([0, 0, 1, 1, 2, 2])
    r = fit_svc(X, y)
    assert r["separable"] and r["margin"] == pytest.approx(0.25, rel=1e-3)


def test_a_trained_model(trained):
    model, config, data = trained
    r = positional_svc(model, config, data).to_dict()
    assert r["labels"] == ["o1", "o2"]
    assert 0.5 <= r["accuracy"] <= 1.0
    assert (r["margin"] is None) == (not r["separable"])
    # the inner products are the projection in other coordinates: separable alike
    assert r["inner_products"]["separable"] == r["separable"]
    assert len(r["points"]["label"]) == len(r["points"]["pca"]) == 2 * data.val_inputs.shape[0]
    assert r["n_points"] == 2 * data.val_inputs.shape[0]


def test_lists_of_one():
    one = Config().override(["task.n_digits=5", "task.list_len=1", "model.d_model=8"])
    with pytest.raises(NotApplicable, match="lists of 1"):
        positional_svc(build_model(one, torch.Generator().manual_seed(0)), one)


def test_a_large_set_is_fitted_on_a_seeded_subsample(trained):
    model, config, data = trained
    a = positional_svc(model, config, data, seed=1, max_fit_points=50).to_dict()
    b = positional_svc(model, config, data, seed=1, max_fit_points=50).to_dict()
    assert a["n_points"] == 50 and a == b
