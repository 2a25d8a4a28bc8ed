"""Training the research line's 2-layer d_model 64 model against its own train.py run
(tests/fixtures/research/train_default_1000.safetensors: train.py's defaults, 1,000 steps, CPU):
same init, batches, losses, weights and validation accuracy from the same seed."""

import pytest
import torch

from listcopy.config import Config
from listcopy.engine import Ensemble
from listcopy.model import build_model
from listcopy.task import dataset, seed_generator
from listcopy.training import BatchOrder, train
from tests.conftest import FIXTURES

# train.py's defaults: 2 layers, 1 head, d_model 64, 100 digits, lists of 2, batch 2048, AdamW
# lr 1e-3, weight decay 0.01, evaluation every 100 steps, the MASK token and the layer-0 mask.
RECIPE = ["task.mask_token=true", "model.layer0_mask=true", "model.n_layers=2", "model.d_model=64",
          "train.batch_size=2048"]


@pytest.fixture(scope="module")
def fx():
    from safetensors.torch import load_file

    return load_file(FIXTURES / "research" / "train_default_1000.safetensors")


def recipe(steps, *extra):
    return Config().override([*RECIPE, f"train.max_steps={steps}", *extra])


def test_init_and_batches_are_train_pys(fx):
    config = recipe(1000)
    gen = seed_generator(config.task, 0)
    state = build_model(config, gen).state_dict()
    for key, value in state.items():
        if not key.endswith(".mask"):
            assert torch.equal(value, fx[f"init.{key}"]), key
    order = BatchOrder(gen, config.task.n_train, config.batch_size, reshuffle=False)
    assert torch.equal(order.batches(0), fx["batch_idx"].long())


def test_first_steps_losses_are_train_pys(fx):
    """The mean training loss of steps 1-10 and 11-20 (train.py's loss.item() per step)."""
    run = train(recipe(20, "train.eval_every=10"), progress=False)
    losses = fx["loss"].double()
    assert [h["train_loss"] for h in run.history] == pytest.approx(
        [losses[:10].mean().item(), losses[10:20].mean().item()], abs=1e-5)


def test_the_torch_backend_trains_it_the_kernel_declines_it():
    config = recipe(10)
    sds = [build_model(config, torch.Generator().manual_seed(0)).state_dict()]
    assert Ensemble(config, sds).backend == "torch"
    with pytest.raises(ValueError, match="layer-0 mask"):
        Ensemble(config, sds, backend="kernel")
    assert dataset(config).train_inputs.shape == (8000, 5)


@pytest.mark.slow
def test_1000_steps_match_train_pys_run(fx):
    """About 10 minutes on one core, as train.py itself."""
    run = train(recipe(1000), progress=False)
    for key, value in run.state.items():
        if not key.endswith(".mask"):
            assert torch.allclose(value, fx[f"step1000.{key}"], atol=1e-4), key
    accs = [h["acc"] for h in run.history]
    assert accs == pytest.approx(fx["val_acc_every100"].tolist(), abs=5e-4)
    assert accs[-1] == pytest.approx(0.46575, abs=1e-4)  # train.py's printed final accuracy
