import pytest
import torch

from listcopy import Config
from listcopy.model import build_model
from listcopy.task import dataset

# A small task the model learns in about 1,400 steps (~3 s): 20 digits, 400 lists, 80 in validation.
@pytest.fixture(scope="package", autouse=True)
def _one_thread():
    """These models are tiny: a second intra-op thread only adds hand-offs (on a busy 2-core
    machine it made this folder ~5x slower). Restored after the last test here."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


TRAINED = ["task.n_digits=20", "model.d_model=16", "train.batch_size=64", "train.max_steps=2000",
           "train.device=cpu"]


@pytest.fixture(scope="session")
def trained():
    """(model, config, data): a listcopy-trained 3-layer model at >= 99.9% validation accuracy."""
    from listcopy.training import train

    config = Config().override(TRAINED)
    run = train(config, progress=False)
    assert run.metrics["acc"] >= 0.999
    return run.model(), config, dataset(config)


@pytest.fixture(scope="session")
def seed_model(fixtures_dir):
    from listcopy.checkpoint import load

    model, config = load(fixtures_dir / "seed_default_1000.pt")
    return model, config, dataset(config)


@pytest.fixture(scope="session")
def fixtures_dir():
    from pathlib import Path

    return Path(__file__).parent.parent / "fixtures"


@pytest.fixture
def odd():
    """An untrained model of another shape: list_len 3, 2 layers, 2 heads, LayerNorm and biases."""
    config = Config().override(["task.n_digits=5", "task.list_len=3", "model.n_layers=2",
                                "model.n_heads=2", "model.d_model=8", "model.ln=true",
                                "model.use_bias=true", "train.batch_size=16"])
    model = build_model(config, torch.Generator().manual_seed(1))
    with torch.no_grad():  # make the biases and LayerNorm weights non-trivial
        for name, p in model.named_parameters():
            if name.rsplit(".", 1)[-1] in ("b_Q", "b_K", "b_V", "b_O", "b_U", "w", "b"):
                p.add_(0.3 * torch.randn(p.shape, generator=torch.Generator().manual_seed(len(name))))
    return model.eval(), config, dataset(config)


@pytest.fixture
def constant_patterns():
    """A model whose attention cannot depend on the input: W_Q = 0, so every score is 0 and each
    query spreads its attention evenly over the keys the mask allows."""
    config = Config().override(["task.n_digits=10", "train.batch_size=16"])
    model = build_model(config, torch.Generator().manual_seed(3))
    with torch.no_grad():
        for block in model.blocks:
            block.attn.W_Q.zero_()
    return model.eval(), config, dataset(config)


@pytest.fixture(scope="session")
def trained2():
    """(model, config, data): a listcopy-trained 2-layer model part way (right and wrong lists
    both common), the paper's layer count."""
    from listcopy.training import train

    config = Config().override([*TRAINED, "model.n_layers=2"])
    run = train(config, progress=False)
    assert 0.2 < run.metrics["acc"] < 0.95
    return run.model().eval(), config, dataset(config)
