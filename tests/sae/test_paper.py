"""The paper's questions, each on a case whose answer is known by construction."""

import numpy as np
import pytest
import torch

from listcopy.sae.attention import alpha_correlations, pearson
from listcopy.sae.directions import decoder_alignment
from listcopy.sae.io import load_sae, sae_lens
from listcopy.sae.latents import LatentTable, latent_table
from listcopy.sae.pairs import swap_statistics, swapped_pairs
from listcopy.sae.site import Site
from listcopy.sae.steering import classify, steer_latent

from .reference import hand_outputs


def jumprelu(W_enc, W_dec, b_dec=None):
    """A SAELens JumpReLU SAE with the given weights (zero encoder bias and threshold)."""
    lens = sae_lens()
    d, n = W_enc.shape
    sae = lens.JumpReLUSAE(lens.JumpReLUSAEConfig(d_in=d, d_sae=n))
    with torch.no_grad():
        sae.W_enc.copy_(W_enc)
        sae.W_dec.copy_(W_dec)
        sae.b_dec.copy_(torch.zeros(d) if b_dec is None else b_dec)
    return sae


def test_alignment_finds_the_planted_directions(trained):
    model, config, _ = trained
    E, P = model.W_E.detach(), model.W_pos.detach()
    planted = torch.stack([E[7] + P[0], 3.0 * (E[12] + P[1]), E[0] - P[1]])
    sae = jumprelu(planted.T.clone(), planted)
    got = decoder_alignment(sae, model)
    first, second, third = got["latents"]
    assert (first["digit"], first["position"]) == (7, "d1") and first["cosine"] == pytest.approx(1)
    assert (second["digit"], second["position"]) == (12, "d2") and second["cosine"] == pytest.approx(1)
    assert third["cosine"] < 0.999
    assert got["n_aligned"] >= 2 and got["directions_covered"] == pytest.approx(2 / 40)


def test_pearson_matches_numpy():
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(50, generator=g), torch.randn(50, generator=g)
    assert pearson(x, 2 * x + y) == pytest.approx(np.corrcoef(x, 2 * x + y)[0, 1])
    assert pearson(torch.ones(5), x[:5]) is None


def _table(z, alpha, lists):
    targets = lists.clone()
    inputs = torch.cat([lists, torch.full((lists.shape[0], 3), 9)], 1)
    return LatentTable(inputs, targets, z, alpha, 2)


def test_graded_binary_other():
    g = torch.Generator().manual_seed(0)
    n = 400
    a1 = torch.rand(n, generator=g)
    alpha = torch.stack([a1, 1 - a1], 1)
    on = torch.rand(n, generator=g) < 0.5
    z = torch.zeros(n, 3)
    z[:, 0] = torch.where(on, 2.0 * alpha[:, 0], 0.0)                          # graded: follows alpha_1
    z[:, 1] = torch.where(on, 1.0, 0.0)                                      # binary: one magnitude
    z[:, 2] = torch.where(on, torch.rand(n, generator=g) + 0.1, 0.0)        # neither
    got = alpha_correlations(_table(z, alpha, torch.zeros(n, 2, dtype=torch.long)),
                             torch.ones(3, dtype=torch.bool))
    kinds = [r["kind"] for r in got["latents"]]
    assert kinds == ["graded", "binary", "other"]
    assert got["latents"][0]["corr_active"][0] == pytest.approx(1.0)
    assert got["latents"][0]["corr_active"][1] == pytest.approx(-1.0)
    assert got["latents"][1]["cv_active"] == 0.0
    assert (got["n_graded"], got["n_binary"], got["n_other"]) == (1, 1, 1)


def test_swapped_pairs_by_hand():
    lists = torch.tensor([[1, 2], [2, 1], [3, 3], [4, 0], [5, 6], [0, 4]])
    assert swapped_pairs(lists).tolist() == [[0, 1], [5, 3]]  # (1,2)/(2,1) and (0,4)/(4,0)
    z = torch.tensor([[2.0, 1.0, 0.0],   # (1, 2)
                      [1.0, 1.0, 3.0],   # (2, 1): shares latents 0 (ratio 2) and 1 (ratio 1)
                      [9.0, 9.0, 9.0],
                      [0.0, 4.0, 0.0],   # (4, 0)
                      [9.0, 9.0, 9.0],
                      [0.0, 2.0, 0.0]])  # (0, 4): shares latent 1, ratio 2 / 4
    got = swap_statistics(_table(z, torch.full((6, 2), 0.5), lists))
    assert got["n_pairs"] == 2
    assert got["mean_shared"] == pytest.approx((2 + 1) / 2)
    assert got["mean_active"] == pytest.approx((2 + 3 + 1 + 1) / 4)
    assert got["mean_jaccard"] == pytest.approx((2 / 3 + 1) / 2)
    assert got["frac_same_set"] == pytest.approx(0.5)
    assert got["ratio"]["n"] == 3 and got["ratio"]["median"] == pytest.approx(1.0)
    assert got["ratio"]["frac_near_one"] == pytest.approx(1 / 3)
    assert got["latents"][0] == {"latent": 1, "n_shared": 2, "median_ratio": pytest.approx(0.5)}


def test_classify_stay_swap_break():
    targets = torch.tensor([[1, 2], [1, 2], [1, 2], [3, 4]])
    preds = torch.tensor([[1, 2], [2, 1], [2, 2], [4, 3]])
    assert classify(preds, targets) == {"stay": 0.25, "swap": 0.5, "break": 0.25}


def test_steering_matches_a_hand_splice(trained, sae_dir):
    """Factor 1 is the plain reconstruction; factor 0 is the reconstruction without the latent."""
    model, config, data = trained
    sae = load_sae(sae_dir).sae
    site = Site("blocks.0.hook_resid_post", (2,))
    table = latent_table(model, sae, site, data.inputs, data.targets)
    latent = int((table.z != 0).sum(0).argmax())
    got = steer_latent(model, sae, table, site.hook, latent, factors=[0.0], max_lists=50)
    rows = torch.nonzero((table.z[:, latent] != 0)
                         & (table.targets[:, 0] != table.targets[:, 1])).flatten()[:50]
    assert got["n_lists"] == rows.numel() == 50
    inputs, targets = table.inputs[rows], table.targets[rows]
    plain = hand_outputs(model, inputs, site.hook, (2,), sae)
    assert got["by_factor"]["1"] == classify(plain, targets)

    class WithoutLatent:
        def encode(self, x):
            z = sae.encode(x)
            z[:, latent] = 0
            return z

        decode = staticmethod(sae.decode)

    zeroed = hand_outputs(model, inputs, site.hook, (2,), WithoutLatent())
    assert got["by_factor"]["0"] == classify(zeroed, targets)
    assert not torch.equal(plain, zeroed)  # the latent matters on these lists
