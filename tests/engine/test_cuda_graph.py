"""The CUDA-graph training path (engine/cuda_graph.py): skipped without cuda, and its step, run
eagerly here on the CPU, equal to the eager torch backend and to torch's own AdamW with a
learning rate per step and clip_grad_norm_ on the hooked model; GraphedTorch's handling around the
graph (warm-up undone, buffers refilled per stretch, replays, recapture, the eager fallback) with
torch.cuda's streams and graphs replaced by stand-ins that record the step and replay it on the
CPU. Real capture and replay need a GPU: tests/gpu/ (run on an H200 by benchmarks/device_check.sh;
CI has none)."""

import dataclasses

import torch

from listcopy.engine import Ensemble
from listcopy.engine.backend import Stretch
from listcopy.engine.cuda_graph import GraphedTorch, StepBuffers, graph_step, graphs_apply
from listcopy.engine.torch_backend import TorchBackend
from listcopy.task import dataset

from .helpers import small, state_dicts
from .test_kernel_parity import reference_steps


def stretch(config, E, n_steps, lr, clip=None, batch0=2):
    data = dataset(config)
    L = config.task.list_len
    g = torch.Generator().manual_seed(3)
    batches = torch.randint(0, data.train_inputs.shape[0], (E, 7, 16), generator=g)
    return Stretch(data.train_inputs, data.train_targets[:, L + 1:].contiguous(), batches, batch0,
                   n_steps, lr, torch.full((E,), 0.01, dtype=torch.float64),
                   torch.ones(E, dtype=torch.bool), torch.zeros(E, dtype=torch.float64), clip)


def eager_graph_steps(ens, s):
    """The steps a replayed graph takes, run eagerly: the buffers loaded, graph_step n times."""
    backend = TorchBackend(ens.forward)
    buf = StepBuffers.like(s, ens.params, s.n_steps)
    buf.load(s, ens.optim.step)
    const = ens.forward.const_positions(s.inputs)
    for _ in range(s.n_steps):
        graph_step(backend, ens.params, ens.optim, buf, const)
    ens.optim.step += s.n_steps
    return buf.loss


def test_the_graph_path_is_skipped_without_cuda():
    assert not graphs_apply(torch.device("cpu"))
    assert graphs_apply(torch.device("cuda")) == torch.cuda.is_available()
    config = small()
    ens = Ensemble(config, state_dicts(config, [0], False), backend="torch")
    assert type(ens._backend) is TorchBackend  # on the CPU: eager, never wrapped
    wrapped = GraphedTorch(ens._backend)
    assert wrapped.name == "torch" and wrapped.predict == ens._backend.predict


def test_the_graph_step_equals_eager_steps():
    """12 steps (wrapping around 7 batches) of 3 members from batch 2 on."""
    config = small(use_bias=True, ln=True)
    sds = state_dicts(config, range(3), False)
    graphed, eager = (Ensemble(config, sds, backend="torch") for _ in range(2))
    lr = torch.tensor([1e-3, 3e-3, 1e-2], dtype=torch.float64)
    loss = eager_graph_steps(graphed, stretch(config, 3, 12, lr))
    s = stretch(config, 3, 12, lr)
    eager.train_steps(s.inputs, s.targets, s.batches, s.batch0, 12, lr, s.weight_decay,
                      s.active, s.loss_sum)
    assert graphed.optim.step == eager.optim.step == 12
    for a, b in [(graphed.params.flat, eager.params.flat), (graphed.optim.exp_avg, eager.optim.exp_avg)]:
        assert torch.allclose(a.detach(), b.detach(), atol=1e-6, rtol=1e-5)
    assert torch.allclose(loss.double(), s.loss_sum, rtol=1e-5)


def test_the_graph_step_schedules_and_clips_as_torch_does():
    config = small()
    E, n = 3, 8
    sds = state_dicts(config, range(E), False)
    ens = Ensemble(config, sds, backend="torch")
    lrs = torch.tensor([[1e-3 * (s + 1) for s in range(n)], [2e-3] * n, [5e-3 * 0.8 ** s for s in range(n)]],
                       dtype=torch.float64)
    clip = torch.tensor([0.05, 0.0, 1e6], dtype=torch.float64)
    s = stretch(config, E, n, lrs, clip, batch0=0)
    eager_graph_steps(ens, s)
    order = torch.arange(n) % s.batches.shape[1]  # 8 steps over 7 batches: the first again last
    for e in range(E):
        ref, _ = reference_steps(config, sds[e], s.batches[e, order], lrs[e].tolist(), clip[e].item(), 0.01)
        mine = ens.state_dict(e)
        for name in ens.layout.names:
            assert torch.allclose(mine[name], ref[name], atol=2e-5, rtol=1e-4), (e, name)


class FakeStream:
    def wait_stream(self, other):
        pass


class FakeGraph:
    """A CUDA graph stand-in: capture records the step's call, replay runs it (on the CPU), so
    the static buffers are read at each replay as a real graph reads them."""

    def __init__(self):
        self.step = None

    def replay(self):
        self.step()


def fake_cuda(monkeypatch, fail_capture=False):
    """torch.cuda's streams and graphs as stand-ins: what GraphedTorch does around the graph
    (warm-up, capture, buffers, replays, the fallback) runs on the CPU. Returns the graphs."""
    import contextlib

    from listcopy.engine import cuda_graph

    capturing, graphs, real_step = [], [], cuda_graph.graph_step

    def step(*args):
        if capturing:  # recorded, not run: capture executes nothing
            capturing[-1].step = lambda: real_step(*args)
        else:
            real_step(*args)

    @contextlib.contextmanager
    def graph(g, stream=None):
        if fail_capture:
            raise RuntimeError("CUDA error: operation not permitted when stream is capturing")
        capturing.append(g)
        graphs.append(g)
        try:
            yield
        finally:
            capturing.pop()

    monkeypatch.setattr(cuda_graph, "graph_step", step)
    monkeypatch.setattr(torch.cuda, "CUDAGraph", FakeGraph)
    monkeypatch.setattr(torch.cuda, "graph", graph)
    monkeypatch.setattr(torch.cuda, "Stream", FakeStream)
    monkeypatch.setattr(torch.cuda, "stream", lambda s: contextlib.nullcontext())
    monkeypatch.setattr(torch.cuda, "current_stream", FakeStream)
    return graphs


def graphed_and_eager(config, E):
    sds = state_dicts(config, range(E), False)
    graphed, eager = (Ensemble(config, sds, backend="torch") for _ in range(2))
    graphed._backend = GraphedTorch(graphed._backend)
    return graphed, eager


def run(ens, s):
    ens.train_steps(s.inputs, s.targets, s.batches, s.batch0, s.n_steps, s.lr, s.weight_decay,
                    s.active, s.loss_sum, s.max_grad_norm)


def zero_gradient(name: str) -> bool:
    """A key bias's gradient is zero in exact arithmetic (it adds one constant to all of a
    query's scores, which the softmax ignores): computed, it is rounding noise, which AdamW turns
    into steps of about the learning rate, differently on every device and summation order."""
    return name.endswith("attn.b_K")


def far_apart(gpu, cpu, spans):
    """The parameters (other than zero-gradient ones) where the two ensembles differ beyond
    float32 rounding carried through the steps, with their largest difference."""
    diff = (gpu - cpu).abs() - 1e-4 * cpu.abs()
    return {name: round(diff[:, a:b].max().item(), 7) for name, _, a, b in spans
            if not zero_gradient(name) and diff[:, a:b].max() > 1e-5}


def test_summation_order_alone_moves_key_biases_and_nothing_beyond_far_apart():
    """What the GPU test's tolerance rests on, shown on the CPU: the same steps with each batch's
    rows in reverse order (another summation order, as another device's) leave every parameter
    within far_apart's tolerance, except key biases, whose noise gradients AdamW turns into
    steps: they end up far apart, yet within twice the learning rates' sum."""
    config = small(use_bias=True, ln=True)
    sds = state_dicts(config, range(3), False)
    ens, flipped = (Ensemble(config, sds, backend="torch") for _ in range(2))
    n = 12
    lr = torch.tensor([[1e-3 * (s + 1) for s in range(n)]] * 3, dtype=torch.float64)
    s = stretch(config, 3, n, lr, torch.tensor([0.05, 0.0, 1e6], dtype=torch.float64))
    run(ens, s)
    run(flipped, dataclasses.replace(s, batches=s.batches.flip(-1).contiguous(),
                                     loss_sum=torch.zeros_like(s.loss_sum)))
    a, b = ens.params.flat.detach(), flipped.params.flat.detach()
    spans = list(ens.params.layout.spans())
    assert far_apart(a, b, spans) == {}
    keys = [(a[:, lo:hi] - b[:, lo:hi]).abs().max().item() for name, _, lo, hi in spans
            if zero_gradient(name)]
    assert len(keys) == config.model.n_layers and max(keys) > 1e-4
    assert max(keys) <= 2 * lr.sum(1).max().item()
    assert far_apart(a, b + 1e-3 * (torch.arange(b.shape[1]) == spans[0][2]), spans) != {}


def assert_same(graphed, eager):
    assert graphed.optim.step == eager.optim.step
    for a, b in [(graphed.params.flat, eager.params.flat), (graphed.optim.exp_avg, eager.optim.exp_avg),
                 (graphed.optim.exp_avg_sq, eager.optim.exp_avg_sq)]:
        assert torch.allclose(a.detach(), b.detach(), atol=1e-6, rtol=1e-5)


def test_graphed_stretches_replay_one_captured_step_as_eager_steps(monkeypatch):
    """Stretches of 5, 3 (the same graph: fewer steps than its buffers hold) and 12 steps (a new
    capture): the warm-up's steps leave no trace, each replay takes the next batch and rate."""
    graphs = fake_cuda(monkeypatch)
    config = small(use_bias=True)
    graphed, eager = graphed_and_eager(config, 3)
    clip = torch.tensor([0.05, 0.0, 1e6], dtype=torch.float64)
    for n, batch0 in [(5, 2), (3, 0), (12, 4)]:
        lr = torch.tensor([[1e-3 * (s + 1) for s in range(n)]] * 3, dtype=torch.float64)
        s_graphed, s_eager = (stretch(config, 3, n, lr, clip, batch0) for _ in range(2))
        run(graphed, s_graphed)
        run(eager, s_eager)
        assert_same(graphed, eager)
        assert torch.allclose(s_graphed.loss_sum, s_eager.loss_sum, rtol=1e-5)
    assert len(graphs) == 2 and not graphed._backend.failed


def test_a_failed_capture_leaves_the_weights_and_trains_eagerly(monkeypatch, caplog):
    fake_cuda(monkeypatch, fail_capture=True)
    config = small()
    graphed, eager = graphed_and_eager(config, 2)
    lr = torch.tensor([1e-3, 3e-3], dtype=torch.float64)
    for _ in range(2):  # the second stretch goes straight to the eager steps
        s_graphed, s_eager = (stretch(config, 2, 6, lr) for _ in range(2))
        run(graphed, s_graphed)
        run(eager, s_eager)
        assert_same(graphed, eager)
        assert torch.equal(s_graphed.loss_sum, s_eager.loss_sum)
    assert graphed._backend.failed
    assert sum("CUDA graph capture failed" in r.getMessage() for r in caplog.records) == 1



def test_with_stopped_members_the_active_ones_replay_their_own_graph(monkeypatch):
    """Once a member stops, the others still train as graph replays (eager steps cost 17x a
    replay on an H200): one capture per set of active members, kept while that set trains;
    stopped members' weights, moments and losses stay put, as the eager backend leaves them."""
    graphs = fake_cuda(monkeypatch)
    config = small(use_bias=True)
    graphed, eager = graphed_and_eager(config, 4)
    clip = torch.tensor([0.05, 0.0, 1e6, 0.5], dtype=torch.float64)
    plan = [((1, 1, 1, 1), 4, 1), ((1, 0, 1, 1), 5, 2), ((1, 0, 1, 1), 3, 2), ((0, 0, 1, 1), 4, 3),
            ((0, 0, 0, 0), 2, 3), ((0, 0, 1, 1), 4, 3)]
    for n, (active, steps, captured) in enumerate(plan):
        lr = torch.tensor([[1e-3 * (e + 1) * (s + 1) for s in range(steps)] for e in range(4)],
                          dtype=torch.float64)
        on = torch.tensor(active, dtype=torch.bool)
        s_graphed, s_eager = (dataclasses.replace(stretch(config, 4, steps, lr, clip, n), active=on)
                              for _ in range(2))
        before = graphed.params.flat.detach().clone(), graphed.optim.exp_avg.clone()
        run(graphed, s_graphed)
        run(eager, s_eager)
        assert_same(graphed, eager)
        assert torch.allclose(s_graphed.loss_sum, s_eager.loss_sum, rtol=1e-5)
        stopped = ~on
        assert torch.equal(graphed.params.flat.detach()[stopped], before[0][stopped])
        assert torch.equal(graphed.optim.exp_avg[stopped], before[1][stopped])
        assert torch.all(s_graphed.loss_sum[stopped] == 0) and torch.all(s_graphed.loss_sum[on] > 0)
        assert len(graphs) == captured, n
    assert not graphed._backend.failed
