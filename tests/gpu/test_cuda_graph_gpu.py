"""What needs a GPU: collected only where torch sees one (tests/conftest.py), as
benchmarks/device_check.sh runs it; CI has none. The CUDA-graph training path for real: capture
and replay (tests/engine/test_cuda_graph.py runs the same handling on the CPU with stand-ins)."""

import dataclasses

import torch

from listcopy.engine import Ensemble
from listcopy.engine.cuda_graph import GraphedTorch

from ..engine.helpers import small, state_dicts
from ..engine.test_cuda_graph import far_apart, run, stretch, zero_gradient


def to_device(s, device):
    return dataclasses.replace(s, **{f.name: getattr(s, f.name).to(device)
                                     for f in dataclasses.fields(s)
                                     if isinstance(getattr(s, f.name), torch.Tensor)})


def test_on_a_gpu_the_graphed_stretches_equal_eager_ones():
    """The real thing, where a GPU is: an ensemble on cuda trains through captured graphs
    (no fallback), stretch after stretch, as the eager torch backend on the CPU does. Key biases
    (zero gradient, see zero_gradient) only move by at most the learning rates' sum."""
    config = small(use_bias=True, ln=True)
    sds = state_dicts(config, range(3), False)
    gpu, cpu = Ensemble(config, sds, "cuda", backend="torch"), Ensemble(config, sds, backend="torch")
    assert type(gpu._backend) is GraphedTorch
    clip = torch.tensor([0.05, 0.0, 1e6], dtype=torch.float64)
    lr_sum = 0.0
    for n, batch0 in [(5, 2), (3, 0), (12, 4)]:
        lr = torch.tensor([[1e-3 * (s + 1) for s in range(n)]] * 3, dtype=torch.float64)
        s_gpu, s_cpu = to_device(stretch(config, 3, n, lr, clip, batch0), "cuda"), stretch(
            config, 3, n, lr, clip, batch0)
        run(gpu, s_gpu)
        run(cpu, s_cpu)
        assert not gpu._backend.failed and gpu.optim.step == cpu.optim.step
        spans = list(gpu.params.layout.spans())
        assert far_apart(gpu.params.flat.detach().cpu(), cpu.params.flat.detach(), spans) == {}
        lr_sum += lr.sum(1).max().item()
        for name, _, a, b in spans:
            if zero_gradient(name):
                moved = (gpu.params.flat.detach().cpu()[:, a:b] - cpu.params.flat.detach()[:, a:b])
                assert moved.abs().max() <= 2 * lr_sum
        assert torch.allclose(s_gpu.loss_sum.cpu(), s_cpu.loss_sum, rtol=1e-4)


def test_on_a_gpu_members_that_stopped_stay_and_the_others_replay():
    """A stretch with a stopped member: the active ones train through their own captured graph
    (no fallback), as on the CPU; the stopped one's weights do not move."""
    config = small(use_bias=True)
    sds = state_dicts(config, range(3), False)
    gpu, cpu = Ensemble(config, sds, "cuda", backend="torch"), Ensemble(config, sds, backend="torch")
    on = torch.tensor([True, False, True])
    for n, batch0 in [(5, 2), (7, 0)]:
        lr = torch.tensor([[1e-3 * (s + 1) for s in range(n)]] * 3, dtype=torch.float64)
        s_cpu = dataclasses.replace(stretch(config, 3, n, lr, None, batch0), active=on)
        s_gpu = to_device(s_cpu, "cuda")
        s_cpu = dataclasses.replace(s_cpu, loss_sum=torch.zeros_like(s_cpu.loss_sum))
        before = gpu.params.flat.detach()[1].clone()
        run(gpu, s_gpu)
        run(cpu, s_cpu)
        assert not gpu._backend.failed and gpu._backend._graph is not None
        assert torch.equal(gpu.params.flat.detach()[1], before)
        spans = list(gpu.params.layout.spans())
        assert far_apart(gpu.params.flat.detach().cpu(), cpu.params.flat.detach(), spans) == {}
        assert torch.allclose(s_gpu.loss_sum.cpu(), s_cpu.loss_sum, rtol=1e-4)
