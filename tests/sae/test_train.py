"""Training: SAEs recover known sparse features; runs are seeded; every architecture trains, saves
and loads; the data provider is seeded and epoch-shuffled."""

import pytest
import torch

from listcopy.sae import SAEConfig
from listcopy.sae.activations import ActivationBatches
from listcopy.sae.io import load_sae, save_sae
from listcopy.sae.metrics import reconstruction_metrics
from listcopy.sae.train import SAEDiverged, fit_sae


def synthetic(n_rows=4096, d=16, n_features=24, active=2, seed=0):
    """Rows that are sums of ``active`` of ``n_features`` unit directions, magnitudes in [0.5, 1.5],
    plus a constant offset. Returns (rows, features)."""
    g = torch.Generator().manual_seed(seed)
    features = torch.nn.functional.normalize(torch.randn(n_features, d, generator=g), dim=1)
    which = torch.stack([torch.randperm(n_features, generator=g)[:active] for _ in range(n_rows)])
    codes = torch.zeros(n_rows, n_features).scatter_(1, which, torch.rand(n_rows, active,
                                                                         generator=g) + 0.5)
    return codes @ features + 0.3, features


def recovered(sae, features) -> float:
    """Fraction of features with some decoder row at cosine > 0.9."""
    W = torch.nn.functional.normalize(sae.W_dec.detach(), dim=1)
    return float(((features @ W.T).max(1).values > 0.9).float().mean())


@pytest.mark.parametrize("arch", ["batchtopk", "topk"])
def test_recovers_known_sparse_features(arch):
    rows, features = synthetic()
    config = SAEConfig(arch=arch, d_sae=32, k=2, lr=1e-2, steps=400, batch_size=256, device="cpu")
    sae, record = fit_sae(rows, config)
    assert recovered(sae, features) >= 0.8
    assert reconstruction_metrics(sae, rows)["explained_variance"] > 0.9
    assert record["history"][-1]["step"] == 400


def test_an_untrained_sae_does_not_recover_them():
    """The check above can fail: one step of training finds almost none of the features."""
    rows, features = synthetic()
    sae, _ = fit_sae(rows, SAEConfig(d_sae=32, k=2, lr=1e-2, steps=1, batch_size=256, device="cpu"))
    assert recovered(sae, features) < 0.3


def test_seeded_and_leaves_global_rng_alone():
    rows, _ = synthetic(n_rows=512)
    config = SAEConfig(d_sae=16, k=2, lr=1e-2, steps=30, batch_size=64, device="cpu")
    torch.manual_seed(123)
    a, _ = fit_sae(rows, config)
    after = torch.rand(3)
    torch.manual_seed(123)
    b, _ = fit_sae(rows, config)
    assert torch.equal(after, torch.rand(3))  # fit_sae drew nothing from the global generator
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))
    c, _ = fit_sae(rows, config.replace(seed=1))
    assert not torch.equal(a.W_dec, c.W_dec)


@pytest.mark.parametrize("arch, inference", [("batchtopk", "JumpReLUSAE"), ("topk", "TopKSAE"),
                                             ("jumprelu", "JumpReLUSAE"),
                                             ("standard", "StandardSAE")])
def test_every_architecture_saves_and_loads(tmp_path, arch, inference):
    rows, _ = synthetic(n_rows=512)
    config = SAEConfig(arch=arch, d_sae=16, k=2, lr=1e-2, steps=30, batch_size=64, device="cpu",
                       l1_coefficient=0.05, l0_coefficient=0.01)
    sae, _ = fit_sae(rows, config, {"hook_name": "blocks.1.hook_resid_post", "positions": [0, 2]})
    assert type(sae).__name__ == inference
    save_sae(sae, tmp_path / arch, {"sae_config": config.to_dict()})
    loaded = load_sae(tmp_path / arch)
    assert type(loaded.sae).__name__ == inference
    assert (loaded.hook, list(loaded.positions)) == ("blocks.1.hook_resid_post", [0, 2])
    assert torch.equal(loaded.sae.encode(rows), sae.encode(rows))
    assert sorted(p.name for p in (tmp_path / arch).iterdir()) == [
        "cfg.json", "sae.json", "sae_weights.safetensors"]  # no temporary left behind


def test_batches_are_seeded_full_and_cover_each_epoch():
    acts = torch.arange(10, dtype=torch.float32)[:, None]
    a, b = ActivationBatches(acts, 4, seed=7), ActivationBatches(acts, 4, seed=7)
    first = [next(a) for _ in range(6)]
    assert all(torch.equal(x, next(b)) for x in first)
    assert all(x.shape == (4, 1) for x in first)
    for epoch in (first[0:2], first[2:4], first[4:6]):  # 2 full batches per epoch, no repeats
        seen = torch.cat(epoch).flatten().tolist()
        assert len(set(seen)) == 8
    assert not torch.equal(torch.cat(first[0:2]), torch.cat(first[2:4]))
    assert next(ActivationBatches(acts, 64, seed=0)).shape == (10, 1)  # batch capped at the rows


def test_divergence_is_a_failure_not_a_result():
    rows, _ = synthetic(n_rows=256)
    with pytest.raises(SAEDiverged, match="non-finite loss at step"):
        fit_sae(rows * 1e20, SAEConfig(d_sae=16, k=2, steps=5, batch_size=64, device="cpu"))
