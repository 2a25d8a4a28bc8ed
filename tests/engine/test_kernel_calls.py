"""How the kernel backend calls the kernel (issue 12): long work is split into short calls, so that
Ctrl-C is answered between them, with results bit-identical to one long call; never more threads
than members or usable CPUs, whatever torch's thread setting says.
"""

import math
import signal

import pytest
import torch

from listcopy.config import Config
from listcopy.engine import Ensemble
from listcopy.engine.kernel import Kernel
from listcopy.engine.kernel_backend import CALL_FLOPS, usable_cpus
from listcopy.model import build_model
from listcopy.task import dataset

from .helpers import needs_kernel, state_dicts

pytestmark = needs_kernel


def spy(monkeypatch, method, after=None):
    """Record the keyword arguments of each call to Kernel.<method>; ``after(calls)`` runs after
    each call returns."""
    calls = []
    real = getattr(Kernel, method)

    def wrapper(self, *args, **kw):
        real(self, *args, **kw)
        calls.append((args, kw))
        if after is not None:
            after(calls)

    monkeypatch.setattr(Kernel, method, wrapper)
    return calls


def stretch(config, E, n_steps):
    """train_steps' arguments: ``n_steps`` steps of E members from batch 3 of 20, lr per member."""
    data = dataset(config)
    L = config.task.list_len
    g = torch.Generator().manual_seed(0)
    n_batches, B = 20, config.train.batch_size
    batches = torch.stack([torch.randperm(data.train_inputs.shape[0], generator=g)[:n_batches * B]
                           .view(n_batches, B) for _ in range(E)])
    lr = torch.linspace(1e-3, 3e-3, E, dtype=torch.float64)
    wd = torch.full((E,), 0.01, dtype=torch.float64)
    return (data.train_inputs, data.train_targets[:, L + 1:].contiguous(), batches, 3, n_steps,
            lr, wd, torch.ones(E, dtype=torch.bool), torch.zeros(E, dtype=torch.float64))


def members(config, E):
    return Ensemble(config, state_dicts(config, range(E), False))


def test_a_long_stretch_runs_in_short_calls_with_the_same_result(monkeypatch):
    """Issue 12: eval_every >= max_steps made one kernel call of every step, deaf to Ctrl-C.
    600 steps of 8 default members on one thread: calls of at most CALL_FLOPS each, in order,
    and bit-identical to the same steps in one call."""
    config, E = Config(), 8
    chunked, whole = members(config, E), members(config, E)
    whole._backend.call_flops = math.inf
    args = stretch(config, E, 600)
    calls = spy(monkeypatch, "train")
    chunked.train_steps(*args)
    per_step = chunked._backend.shape.flops_per_step(config.train.batch_size) * E
    steps = [c[0][10] for c in calls]  # n_steps
    assert len(calls) > 1 and sum(steps) == 600
    assert all(n * per_step <= CALL_FLOPS for n in steps)
    assert [c[0][9] for c in calls] == [(3 + sum(steps[:i])) % 20 for i in range(len(steps))]
    calls.clear()
    args_whole = stretch(config, E, 600)
    whole.train_steps(*args_whole)
    assert len(calls) == 1
    assert chunked.optim.step == whole.optim.step == 600
    for a, b in [(chunked.params.flat, whole.params.flat), (chunked.optim.exp_avg, whole.optim.exp_avg),
                 (chunked.optim.exp_avg_sq, whole.optim.exp_avg_sq), (args[-1], args_whole[-1])]:
        assert torch.equal(a.detach(), b.detach())


@pytest.fixture
def python_sigint():
    """Python's own Ctrl-C handler for the test's duration: a suite started in the background (by
    ``nohup`` or ``&`` in a script) inherits SIGINT ignored, and raise_signal would do nothing."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


def test_ctrl_c_is_answered_after_the_first_call(monkeypatch, python_sigint):
    """SIGINT delivered while the first call runs (here: as it returns) ends the stretch there,
    a small part of its 600 steps in."""
    config, E = Config(), 8
    ens = members(config, E)
    calls = spy(monkeypatch, "train", after=lambda calls: signal.raise_signal(signal.SIGINT))
    with pytest.raises(KeyboardInterrupt):
        ens.train_steps(*stretch(config, E, 600))
    per_step = ens._backend.shape.flops_per_step(config.train.batch_size) * E
    assert len(calls) == 1 and calls[0][0][10] * per_step <= CALL_FLOPS < 600 * per_step


def test_evaluation_and_prediction_in_short_calls_are_bit_identical(monkeypatch):
    config, E = Config(), 3
    chunked, whole = members(config, E), members(config, E)
    chunked._backend.call_flops = 1.0  # the fewest rows a call may take
    whole._backend.call_flops = math.inf
    data = dataset(config)
    calls = spy(monkeypatch, "evaluate")
    out = [ens.evaluate(data.val_inputs, data.val_targets) for ens in (chunked, whole)]
    assert len(calls) == math.ceil(data.val_inputs.shape[0] / 64) + 1
    for key in ("loss", "acc", "seq_acc"):
        assert torch.equal(out[0][key], out[1][key]), key
    inputs = data.val_inputs[:300]
    assert torch.equal(chunked.predict(inputs), whole.predict(inputs))


def test_threads_never_exceed_members_or_cpus(monkeypatch):
    """Issue 12: --threads 100000 reached the kernel as 100000 (the segfault itself came from
    torch, which the CLI guards)."""
    config = Config()
    ens = members(config, 3)
    data = dataset(config)
    evaluate_calls = spy(monkeypatch, "evaluate")
    train_calls = spy(monkeypatch, "train")
    monkeypatch.setattr(torch, "get_num_threads", lambda: 100000)
    ens.evaluate(data.val_inputs[:64], data.val_targets[:64])
    ens.train_steps(*stretch(config, 3, 2))
    threads = [kw["n_threads"] for _, kw in evaluate_calls + train_calls]
    assert threads and all(1 <= t <= min(3, usable_cpus()) for t in threads), threads


def test_a_training_loop_runs_torch_serially_and_the_kernel_on_torchs_threads(monkeypatch):
    """host_serial: torch's pools would spin beside the kernel's threads after their own ops."""
    config = Config()
    ens, reference = members(config, 4), members(config, 4)
    train_calls = spy(monkeypatch, "train")
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        with ens.host_serial():
            assert torch.get_num_threads() == 1
            with ens.host_serial():  # nested: still the outer count
                ens.train_steps(*stretch(config, 4, 3))
            assert torch.get_num_threads() == 1
        assert torch.get_num_threads() == 2
        reference.train_steps(*stretch(config, 4, 3))
    finally:
        torch.set_num_threads(before)
    expected = min(2, usable_cpus())
    assert [kw["n_threads"] for _, kw in train_calls] == [expected, expected]
    torch.testing.assert_close(ens.state_dicts([3])[0], reference.state_dicts([3])[0],
                               rtol=0, atol=0)


def test_the_kernel_itself_caps_absurd_thread_counts():
    """Called directly with a million threads for 300 members: the kernel starts at most 256."""
    config = Config()
    ens = members(config, 1)
    kernel = ens._backend.kernel
    E = 300
    theta = ens.params.flat.detach().expand(E, -1).contiguous()
    data = dataset(config)
    tokens = data.val_inputs[:16].contiguous()
    targets = data.val_targets[:16, 3:].contiguous()
    stats = (torch.zeros(E, dtype=torch.float64), torch.zeros(E, dtype=torch.int64),
             torch.zeros(E, dtype=torch.int64))
    kernel.evaluate(theta, None, tokens, targets, *stats, n_threads=10**6)
    assert torch.all(stats[0] == stats[0][0]) and stats[0][0] > 0


def test_the_kernel_flushes_denormals_and_leaves_the_callers_setting_alone():
    """An unembedding of denormal weights: the hooked model's logits are tiny, not zero; the
    kernel reads those weights as zero (DAZ) and its logits are exactly zero. After the call, this
    thread's float environment is the caller's again: torch still keeps denormals."""
    config = Config()
    sd = state_dicts(config, [0], False)[0]
    signs = torch.randint(0, 2, sd["unembed.W_U"].shape, generator=torch.Generator().manual_seed(1))
    sd["unembed.W_U"] = (2 * signs - 1).float() * 3e-39
    tokens = dataset(config).val_inputs[:40]
    model = build_model(config, hooks=False)
    model.load_state_dict(sd)
    assert torch.count_nonzero(model(tokens)) > 0
    ens = Ensemble(config, [sd])
    assert ens.backend == "kernel"
    assert torch.count_nonzero(ens.predict(tokens)) == 0
    assert (torch.tensor(3e-39) * torch.tensor(1.0)).item() != 0.0
