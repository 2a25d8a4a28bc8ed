"""Training against the seed's own run (TransformerLens 3.9 fixture), determinism and resume."""

import signal

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from listcopy.checkpoint import (MODEL_FILE, STATE_FILE, CheckpointError, load_tensors,
                                 read_run_json)
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


class Killed(BaseException):
    pass


@pytest.mark.parametrize("seeds", [[0], [0, 1]])
def test_a_kill_between_the_final_checkpoints_writes_is_completed_by_resume(tmp_path, monkeypatch,
                                                                            seeds):
    """Killed right after the final train state was written (before the weights and run.json):
    --resume finds the run done and writes those two from it; the directory then equals an
    uninterrupted run's (single runs and each member of an ensemble)."""
    import json

    from listcopy import checkpoint
    from listcopy.training import train_ensemble

    extra = ["train.eval_every=50", "train.checkpoint_every=100", "train.early_stop_acc=1.0"]
    configs = [short(200, *extra, f"train.seed={s}") for s in seeds]
    straight = train_ensemble(configs, [tmp_path / f"a{s}" for s in seeds], progress=False)
    real = checkpoint.write_run

    def killed_at_the_end(run_dir, record, state, train_state):
        if record["step"] == 200 and run_dir.name == "k0":
            checkpoint.save_tensors(run_dir / STATE_FILE, train_state,
                                    meta={**record, "versions": checkpoint.versions()})
            raise Killed
        real(run_dir, record, state, train_state)

    monkeypatch.setattr(checkpoint, "write_run", killed_at_the_end)
    dirs = [tmp_path / f"k{s}" for s in seeds]
    with pytest.raises(Killed):
        train_ensemble(configs, dirs, progress=False)
    monkeypatch.setattr(checkpoint, "write_run", real)
    assert json.loads((dirs[0] / "run.json").read_text())["step"] == 100  # the stale pair
    train_ensemble(configs, dirs, resume=True, progress=False)
    for run, d in zip(straight, dirs):
        record = json.loads((d / "run.json").read_text())
        assert (record["step"], record["status"]) == (200, "done")
        assert record["history"] == json.loads((run.run_dir / "run.json").read_text())["history"]
        disk, meta = load_tensors(d / MODEL_FILE)
        assert meta["step"] == 200 and all(torch.equal(disk[k], run.state[k]) for k in run.state)


def test_existing_run_is_never_overwritten(tmp_path):
    train(short(20, "train.eval_every=10"), tmp_path / "r", progress=False)
    from listcopy.checkpoint import CheckpointError

    with pytest.raises(CheckpointError, match="already holds a run"):
        train(short(20, "train.eval_every=10"), tmp_path / "r", progress=False)
    with pytest.raises(CheckpointError, match="another config"):
        train(short(20, "train.eval_every=10", "train.lr=0.01"), tmp_path / "r", resume=True,
              progress=False)


def test_resume_with_another_config_names_the_keys_that_differ(tmp_path):
    train(short(20, "train.eval_every=10"), tmp_path / "r", progress=False)
    with pytest.raises(CheckpointError) as err:
        train(short(40, "train.eval_every=10", "train.lr=0.01", "model.d_model=4"), tmp_path / "r",
              resume=True, progress=False)
    text = str(err.value)
    assert "model.d_model: 8 there, 4 now" in text and "train.lr: 0.001 there, 0.01 now" in text
    assert "train.max_steps" in text.split("only")[1]  # and says what may change
    resumed = train(short(40, "train.eval_every=10"), tmp_path / "r", resume=True, progress=False)
    assert resumed.step == 40  # more max_steps: allowed


def test_resume_without_a_train_state_is_refused_and_overwrites_nothing(tmp_path):
    run_dir = tmp_path / "r"
    train(short(20, "train.eval_every=10"), run_dir, progress=False)
    (run_dir / STATE_FILE).unlink()
    before = {name: (run_dir / name).read_bytes() for name in (MODEL_FILE, "run.json")}
    for extra in ((), ("model.d_model=4",)):
        with pytest.raises(CheckpointError, match=f"nothing to resume: {STATE_FILE} is missing"):
            train(short(40, "train.eval_every=10", *extra), run_dir, resume=True, progress=False)
    assert {name: (run_dir / name).read_bytes() for name in before} == before
    result = run_cli("train", "--set", "train.max_steps=40", "--set", "model.d_model=4",
                     "--out", str(run_dir), "--resume", "--quiet")
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert "nothing to resume" in result.stderr
    assert {name: (run_dir / name).read_bytes() for name in before} == before


def test_resume_into_an_empty_directory_starts_a_new_run(tmp_path):
    """What a sweep relies on: --resume where no run has written anything yet trains from step 0."""
    (tmp_path / "r").mkdir()
    run = train(short(20, "train.eval_every=10"), tmp_path / "r", resume=True, progress=False)
    straight = train(short(20, "train.eval_every=10"), progress=False)
    assert run.step == 20 and torch.equal(run.state["embed.W_E"], straight.state["embed.W_E"])


@pytest.mark.parametrize("eval_every, checkpoint_every, max_steps, expected", [
    (10, 15, 100, [20, 30, 50, 60, 80, 90, 100]),   # each boundary, at the first evaluation from it
    (100, 99, 300, [100, 200, 300]),                # the case (1000 and 999) scaled down:
                                                    # common multiples only gave 300 (the end)
    (10, 20, 60, [20, 40, 60]),                     # common multiples: as before
])
def test_a_checkpoint_at_every_checkpoint_every_boundary(tmp_path, monkeypatch, eval_every,
                                                         checkpoint_every, max_steps, expected):
    import listcopy.checkpoint as ckpt

    written = []
    real = ckpt.write_run
    monkeypatch.setattr(ckpt, "write_run",
                        lambda run_dir, record, *a: (written.append(record["step"]),
                                                     real(run_dir, record, *a)))
    config = short(max_steps, "task.n_digits=10", "train.batch_size=16", "train.early_stop_acc=1.0",
                   f"train.eval_every={eval_every}", f"train.checkpoint_every={checkpoint_every}")
    run = train(config, tmp_path / "r", progress=False)
    assert run.step == max_steps and run.stop_reason == "max_steps"
    assert written == expected


@pytest.mark.slow
def test_kill_during_training_then_resume_through_the_cli(tmp_path):
    """kill -9 a real `listcopy train` right after its second checkpoint (paused there, by
    construction: tests/pause.py); --resume; same final weights."""
    from tests import pause

    args = ["train", "--set", "train.max_steps=1500", "--set", "train.eval_every=50",
            "--set", "train.checkpoint_every=100", "--quiet"]
    proc = pause.start(tmp_path / "pause", "checkpoint", 2, *args, "--out", tmp_path / "k")
    assert pause.wait_paused(proc, tmp_path / "pause") is not None, proc.communicate()
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    killed_at = read_run_json(tmp_path / "k")["step"]
    assert 200 <= killed_at < 1500
    done = run_cli(*args, "--out", str(tmp_path / "k"), "--resume")
    assert done.returncode == 0, done.stderr
    straight = run_cli(*args, "--out", str(tmp_path / "s"))
    assert straight.returncode == 0, straight.stderr
    a, _ = load_tensors(tmp_path / "k" / MODEL_FILE)
    b, _ = load_tensors(tmp_path / "s" / MODEL_FILE)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert read_run_json(tmp_path / "k")["step"] == 1500


def test_auto_on_an_accelerator_picks_the_cpu_where_it_is_faster():
    """The notice this replaced said "the CPU is faster" below about 128 models on a GPU; "auto"
    now acts on it (devices.py: 11 default models per CPU thread on cuda with graphs, 128 on mps)
    and says in one line what it chose."""
    from listcopy.devices import choose

    config = Config()
    one = choose(config, 1, found=["cuda"], threads=1, kernel=True)
    assert one.device.type == "cpu" and "1 model(s) at once" in one.line()
    assert "train.device=cuda" in one.line() and "\n" not in one.line()
    assert choose(config, 127, found=["mps"], threads=1, kernel=True).device.type == "cpu"
    assert choose(config, 10, found=["cuda"], threads=1, kernel=True).device.type == "cpu"
    assert choose(config, 11, found=["cuda"], threads=1, kernel=True).device.type == "cuda"  # pays off
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
