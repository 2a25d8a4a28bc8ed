"""Training against the seed's own run (TransformerLens 3.9 fixture), determinism and resume."""

import signal
import subprocess
import sys
import time

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from listcopy.checkpoint import MODEL_FILE, load_tensors, read_run_json
from listcopy.config import Config
from listcopy.task import seed_generator
from listcopy.training import BatchOrder, train

from tests.conftest import run_cli


def short(steps, *extra):
    return Config().override([f"train.max_steps={steps}", *extra])


def test_1000_steps_match_the_notebooks_run(fixtures):
    """Same split, init and batch order as the notebook under torch.manual_seed(0): same weights."""
    from safetensors.torch import load_file

    fx = load_file(fixtures / "seed_train_1000.safetensors")
    run = train(short(1000), progress=False)
    for key, value in run.state.items():
        if key.endswith(".mask"):
            continue
        assert torch.allclose(value, fx[f"step1000.{key}"], atol=1e-4), key
    assert run.history[-1]["acc"] == pytest.approx(float(fx["val_acc_1000"]), abs=1e-4)
    accs = [h["acc"] for h in run.history]
    assert accs == pytest.approx(fx["val_acc_every100"].tolist(), abs=5e-4)


def test_batch_order_is_the_notebooks_dataloader(fixtures):
    from safetensors.torch import load_file

    fx = load_file(fixtures / "seed_train_1000.safetensors")
    config = Config()
    gen = seed_generator(config.task, 0)
    from listcopy.model import build_model
    from listcopy.task import dataset

    build_model(config, gen)
    order = BatchOrder(gen, 8000, 128, reshuffle=False)
    train_inputs = dataset(config).train_inputs
    for i in range(3):
        assert torch.equal(train_inputs[order.batches(0)[i]], fx[f"batch{i}"])


def test_reshuffle_is_a_fresh_dataloader_iterator_per_epoch():
    """--reshuffle: each epoch draws as a new DataLoader iterator would (torch's own DataLoader)."""
    data = TensorDataset(torch.arange(1000))
    loader = DataLoader(data, 64, shuffle=True, drop_last=True)
    torch.manual_seed(3)
    expected = [torch.stack([b[0] for b in loader]) for _ in range(3)]  # three epochs
    order = BatchOrder(torch.Generator().manual_seed(3), 1000, 64, reshuffle=True)
    for epoch in range(3):
        assert torch.equal(order.batches(epoch), expected[epoch])
    assert not torch.equal(expected[0], expected[1])
    cycled = BatchOrder(torch.Generator().manual_seed(3), 1000, 64, reshuffle=False)
    assert cycled.epoch_of(10 * 15) == 0  # itertools.cycle replays the first epoch


def test_same_seed_twice_gives_identical_weights():
    a = train(short(150, "train.eval_every=50"), progress=False)
    b = train(short(150, "train.eval_every=50"), progress=False)
    c = train(short(150, "train.eval_every=50", "train.seed=1"), progress=False)
    assert all(torch.equal(a.state[k], b.state[k]) for k in a.state)
    assert not torch.equal(a.state["embed.W_E"], c.state["embed.W_E"])
    assert a.history == [{**h, "acc": h["acc"]} for h in b.history]


@pytest.mark.parametrize("reshuffle", [False, True])
def test_resume_ends_with_the_weights_of_an_uninterrupted_run(tmp_path, reshuffle):
    extra = ["train.eval_every=25", "train.checkpoint_every=50", f"train.reshuffle={str(reshuffle).lower()}",
             "task.n_digits=20", "train.batch_size=32"]  # 10 batches an epoch: several epochs
    straight = train(short(120, *extra), tmp_path / "a", progress=False)
    first = train(short(60, *extra), tmp_path / "b", progress=False)
    assert first.step == 60
    resumed = train(short(120, *extra), tmp_path / "b", resume=True, progress=False)
    assert resumed.step == straight.step == 120
    for k in straight.state:
        assert torch.equal(straight.state[k], resumed.state[k]), k
    # the first run's own final evaluation at its max_steps (60) stays in the history
    assert [h["step"] for h in resumed.history if h["step"] != 60] == [
        h["step"] for h in straight.history]
    disk, _ = load_tensors(tmp_path / "b" / MODEL_FILE)
    assert torch.equal(disk["embed.W_E"], straight.state["embed.W_E"])


def test_existing_run_is_never_overwritten(tmp_path):
    train(short(20, "train.eval_every=10"), tmp_path / "r", progress=False)
    from listcopy.checkpoint import CheckpointError

    with pytest.raises(CheckpointError, match="already holds a run"):
        train(short(20, "train.eval_every=10"), tmp_path / "r", progress=False)
    with pytest.raises(CheckpointError, match="another config"):
        train(short(20, "train.eval_every=10", "train.lr=0.01"), tmp_path / "r", resume=True,
              progress=False)


@pytest.mark.slow
def test_kill_during_training_then_resume_through_the_cli(tmp_path):
    """kill -9 a real `listcopy train` after its second checkpoint; --resume; same final weights."""
    args = ["--set", "train.max_steps=1500", "--set", "train.eval_every=50",
            "--set", "train.checkpoint_every=100", "--quiet"]
    exe = [sys.executable, "-m", "listcopy.cli", "train", *args]
    proc = subprocess.Popen([*exe, "--out", str(tmp_path / "k")], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while time.time() < deadline:
        try:
            if read_run_json(tmp_path / "k")["step"] >= 200:
                break
        except Exception:
            pass
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    killed_at = read_run_json(tmp_path / "k")["step"]
    assert 200 <= killed_at < 1500
    done = run_cli("train", *args, "--out", str(tmp_path / "k"), "--resume")
    assert done.returncode == 0, done.stderr
    straight = run_cli("train", *args, "--out", str(tmp_path / "s"))
    assert straight.returncode == 0, straight.stderr
    a, _ = load_tensors(tmp_path / "k" / MODEL_FILE)
    b, _ = load_tensors(tmp_path / "s" / MODEL_FILE)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert read_run_json(tmp_path / "k")["step"] == 1500


def test_auto_on_an_accelerator_picks_the_cpu_where_it_is_faster():
    """The notice this replaced said "the CPU is faster" below about 128 models on a GPU; "auto"
    now acts on it (devices.py) and says in one line what it chose."""
    from listcopy.devices import choose

    config = Config()
    one = choose(config, 1, found=["cuda"], threads=1, kernel=True)
    assert one.device.type == "cpu" and "1 model(s) at once" in one.line()
    assert "train.device=cuda" in one.line() and "\n" not in one.line()
    assert choose(config, 127, found=["mps"], threads=1, kernel=True).device.type == "cpu"
    assert choose(config, 128, found=["cuda"], threads=1, kernel=True).device.type == "cuda"  # pays off
    asked = choose(config.override(["train.device=cuda"]), 1, found=[])
    assert asked.device.type == "cuda" and asked.why == "train.device = cuda"  # asked for: no advice
    assert choose(config, 1, found=[]).device.type == "cpu"


def test_listcopy_train_says_which_device_and_why(tmp_path):
    result = run_cli("train", "--set", "train.max_steps=100", "--set", "train.eval_every=100",
                     "--out", str(tmp_path / "r"))
    assert result.returncode == 0, result.stderr
    lines = [x for x in result.stderr.splitlines() if x.startswith("listcopy: device ")]
    assert len(lines) == 1 and ("no GPU" in lines[0] or "model(s) at once" in lines[0]), result.stderr
    quiet = run_cli("train", "--quiet", "--set", "train.max_steps=100", "--out", str(tmp_path / "q"))
    assert quiet.returncode == 0 and "listcopy: device" not in quiet.stderr
