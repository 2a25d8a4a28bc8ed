"""The CUDA-graph training path (engine/cuda_graph.py): skipped without cuda, and its step, run
eagerly here on the CPU, equal to the eager torch backend and to torch's own AdamW with a
learning rate per step and clip_grad_norm_ on the hooked model. (Capture and replay need a GPU:
unmeasured and untested on this project's CPU-only machine.)"""

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
