"""Fixtures of the SAE tests: a small trained model and an SAE on its SEP residual.

SAELens is required here (CI installs the [sae] extra): these tests never skip.
"""

import pytest
import torch

from listcopy import Config
from listcopy.task import dataset

# 3 layers, 20 digits (400 lists, 80 in validation), d_model 16: ~99% in 2,000 steps, a few seconds.
MODEL = ["task.n_digits=20", "model.d_model=16", "train.batch_size=64", "train.max_steps=2000",
         "train.early_stop_acc=0.99", "train.device=cpu"]


@pytest.fixture(scope="package", autouse=True)
def _one_thread():
    """Tiny matrices: a second intra-op thread only adds hand-offs (on a busy 2-core machine it
    made SAE training more than 10x slower). Restored after the last test here."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory):
    """A run directory of a trained model (>= 0.9 validation accuracy)."""
    from listcopy.training import train

    out = tmp_path_factory.mktemp("model") / "run"
    run = train(Config().override(MODEL), out, progress=False)
    assert run.metrics["acc"] >= 0.9
    return out


@pytest.fixture(scope="session")
def trained(model_dir):
    """(model, config, data) of ``model_dir``."""
    from listcopy.checkpoint import load

    model, config = load(model_dir)
    return model, config, dataset(config)


SMALL_SAE = dict(d_sae=24, k=2, lr=3e-3, steps=300, batch_size=64, device="cpu")


@pytest.fixture(scope="session")
def sae_dir(model_dir, tmp_path_factory):
    """A BatchTopK SAE trained by ``train_sae`` on the model's SEP residual after layer 0."""
    from listcopy.sae import SAEConfig, train_sae

    out = tmp_path_factory.mktemp("sae") / "sae"
    train_sae(model_dir, SAEConfig(**SMALL_SAE), out)
    return out
