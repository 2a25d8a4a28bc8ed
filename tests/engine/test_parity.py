"""The engine's numbers against the hooked model: both backends' logits, predictions, losses and
gradients, on arbitrary token rows and on task rows (the pruned torch path), at several shapes;
the kernel's training steps and metrics against the torch backend's; the pruned plan and the rows
each layer needs, against hand-written and brute-force references.
"""

import pytest
import torch

from listcopy.config import Config
from listcopy.engine import Ensemble
from listcopy.engine.rows import allowed_matrices, output_rows, row_needs
from listcopy.task import dataset

from .helpers import (DEVICES, FLAG_COMBOS, backends, check_against_hooked, hooked_loss_and_grads,
                      needs_kernel, small, split, state_dicts, stretch_setup)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("perturb", [False, True], ids=["init", "perturbed"])
@pytest.mark.parametrize("ln,use_bias,freeze_wv,freeze_wo,n_heads", FLAG_COMBOS)
def test_logits_and_gradients_equal_the_hooked_model(ln, use_bias, freeze_wv, freeze_wo, n_heads,
                                                     perturb, device):
    config = small(ln=ln, use_bias=use_bias, freeze_wv=freeze_wv, freeze_wo=freeze_wo,
                   n_heads=n_heads)
    check_against_hooked(config, state_dicts(config, [0, 1], perturb), device=device)


@needs_kernel
@pytest.mark.parametrize("overrides", [
    dict(task={"list_len": 1, "n_digits": 12}),
    dict(task={"list_len": 3, "n_digits": 10}, model={"n_heads": 2}),
    dict(task={"n_digits": 30}, model={"d_model": 12, "n_heads": 4, "n_layers": 3}),
    dict(model={"d_model": 4, "n_layers": 1}),
    dict(task={"n_digits": 20}, model={"d_model": 64, "n_heads": 2, "n_layers": 1}),
])
def test_kernel_shapes_equal_the_hooked_model(overrides):
    """Other list lengths (other masks), heads, widths and depths; batches not a multiple of the
    kernel's lanes."""
    config = Config().replace(**overrides)
    sds = state_dicts(config, [0, 1, 2], False)
    assert Ensemble(config, sds).backend == "kernel"
    check_against_hooked(config, sds, n=21)


@needs_kernel
def test_kernel_steps_and_evaluation_equal_the_torch_backend():
    config = small()
    sds, inputs, targets, batches = stretch_setup(config, 3, seed=0)
    data = dataset(config)
    lr = torch.tensor([1e-3, 3e-3, 1e-2])
    wd = torch.tensor([0.01, 0.0, 0.1])
    active = torch.ones(3, dtype=torch.bool)
    out = []
    for ens in backends(config, sds):
        loss = torch.zeros(3, dtype=torch.float64)
        ens.train_steps(inputs, targets, batches, 5, 50, lr, wd, active, loss)
        out.append((ens, loss, ens.evaluate(data.val_inputs, data.val_targets)))
    (ref, ref_loss, ref_metrics), (ker, ker_loss, ker_metrics) = out
    assert ref.optim.step == ker.optim.step == 50
    for a, b in [(ref.params.flat, ker.params.flat), (ref.optim.exp_avg, ker.optim.exp_avg),
                 (ref.optim.exp_avg_sq, ker.optim.exp_avg_sq)]:
        assert torch.allclose(a.detach(), b.detach(), atol=1e-5, rtol=1e-4)
    assert torch.allclose(ref_loss, ker_loss, atol=1e-4)
    for key in ("loss", "acc", "seq_acc"):
        assert torch.allclose(ref_metrics[key], ker_metrics[key], atol=1e-4), key


def check_task_batch_against_hooked(config, sds, n=24, rtol=0.0, device="cpu"):
    """Task rows only: SEP and the outputs hold the same token in every row, so the torch path
    computes their layer-0 rows once per member (``const_positions``) and prunes by the mask.
    The torch backend on ``device`` against the hooked model on CPU."""
    data = dataset(config)
    L = config.task.list_len
    E = len(sds)
    g = torch.Generator().manual_seed(7)
    rows = torch.randint(0, data.inputs.shape[0], (E, n), generator=g)
    tokens, targets = data.inputs[rows], data.targets[rows][..., L + 1:]
    ens = Ensemble(config, sds, device, backend="torch")
    on = tokens.to(device)
    assert ens.const_positions(on) == frozenset(range(L, 2 * L + 1))
    loss, grad = (t.cpu() for t in ens.loss_and_grad(on, targets.to(device)))
    with torch.no_grad():
        shared = ens.output_logits(on[0]).cpu()
    for e in range(E):
        logits, ref_loss, ref_grads = hooked_loss_and_grads(config, sds[e], tokens[e], targets[e])
        ref_shared = hooked_loss_and_grads(config, sds[e], tokens[0], targets[0])[0]
        assert torch.allclose(shared[e], ref_shared, atol=1e-5, rtol=rtol)
        assert loss[e].item() == pytest.approx(ref_loss.item(), abs=1e-5, rel=rtol)
        mine = split(ens, grad, e)
        for name, ref in ref_grads.items():
            assert torch.allclose(mine[name], ref, atol=1e-5, rtol=rtol), name


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("ln,use_bias,freeze_wv,freeze_wo,n_heads", FLAG_COMBOS)
def test_pruned_torch_path_on_task_rows_equals_the_hooked_model(ln, use_bias, freeze_wv, freeze_wo,
                                                                n_heads, device):
    config = small(ln=ln, use_bias=use_bias, freeze_wv=freeze_wv, freeze_wo=freeze_wo,
                   n_heads=n_heads)
    check_task_batch_against_hooked(config, state_dicts(config, [0, 1], True), device=device)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("list_len,n_layers", [(1, 2), (2, 1), (3, 2), (3, 3), (4, 3)])
@pytest.mark.parametrize("ln_bias", [False, True], ids=["plain", "ln_bias"])
def test_pruned_torch_path_at_d128_equals_the_hooked_model(list_len, n_layers, ln_bias, device):
    """The sweep's width, other list lengths (other masks) and depths, on task rows and on
    arbitrary token rows; with LN and biases, every parameter perturbed (mildly: at this width
    float32 rounding alone, the hooked model's included, grows with the logits)."""
    config = Config().replace(
        task={"list_len": list_len, "n_digits": 10},
        model={"d_model": 128, "n_layers": n_layers, "ln": ln_bias, "use_bias": ln_bias})
    sds = state_dicts(config, [0, 1], ln_bias, scale=0.05)
    check_task_batch_against_hooked(config, sds, rtol=1e-4, device=device)
    check_against_hooked(config, sds, rtol=1e-4, device=device)


def test_pruned_plan_follows_the_mask():
    """list_len 2, two layers, SEP and outputs constant: layer 0 needs keys only at the digits
    per example (no queries); the last layer only the SEP row per example."""
    config = small()
    ens = Ensemble(config, state_dicts(config, [0], False), backend="torch")
    plan = ens.forward.plan(frozenset({2, 3, 4}))
    first, last = plan.layers
    assert (first.q_var, first.k_var, first.v_var) == ((), (0, 1), (0, 1))
    assert set(first.out_const) == {3, 4} and set(first.out_var) == {2}
    assert (last.q_var, last.k_var, last.v_var) == ((), (2,), (2,))
    assert set(last.out_var) == {3, 4} and last.out_const == ()


def test_rows_each_layer_needs_by_hand():
    """The seed's model (list_len 2, three layers): o1 reads SEP, o2 reads SEP and o1, SEP reads
    d1 and d2, d1 and d2 read d1."""
    needs = row_needs(allowed_matrices(2, 3), output_rows(2))
    assert needs.held == ((0, 1, 2, 3, 4), (0, 1, 2, 3, 4), (2, 3, 4), (3, 4))
    assert [needs.attending(layer) for layer in range(3)] == [(2, 4), (2, 4), (4,)]
    assert [needs.key_rows(layer) for layer in range(3)] == [(0, 1, 2, 3), (0, 1, 2, 3), (2, 3)]
    assert [needs.value_rows(layer) for layer in range(3)] == [(0, 1, 2, 3), (0, 1, 2, 3), (2, 3)]


def reachable(allowed, out_rows):
    """Brute force: position j of layer l's input reaches an output iff some output row of
    (I | A_last) @ ... @ (I | A_l) is non-zero at j (boolean matrix products)."""
    T = len(allowed[0])
    total = torch.eye(T, dtype=torch.int64)
    held = [tuple(sorted(out_rows))]
    for matrix in reversed(allowed):
        total = ((total @ (torch.eye(T, dtype=torch.int64) + torch.tensor(matrix).long())) > 0).long()
        held.insert(0, tuple(j for j in range(T) if total[list(out_rows), j].any()))
    return tuple(held)


@pytest.mark.parametrize("list_len,n_layers", [(1, 1), (2, 3), (3, 2), (4, 4)])
def test_rows_each_layer_needs_equal_brute_force(list_len, n_layers):
    allowed = allowed_matrices(list_len, n_layers)
    assert row_needs(allowed, output_rows(list_len)).held == reachable(allowed, output_rows(list_len))


def test_rows_follow_a_mask_per_layer():
    """One allowed-matrix per layer: random causal masks (rows with no key included, which
    receive nothing), and the seed's mask after a layer 0 where the outputs see nothing."""
    g = torch.Generator().manual_seed(0)
    for _ in range(20):
        T, n_layers = 7, 4
        allowed = tuple(tuple(tuple(bool(x) for x in row) for row in
                              (torch.rand(T, T, generator=g) < 0.3).tril().tolist())
                        for _ in range(n_layers))
        out = tuple(sorted(torch.randperm(T, generator=g)[:2].tolist()))
        assert row_needs(allowed, out).held == reachable(allowed, out)
    seed = allowed_matrices(2, 3)
    first = tuple(row if i < 3 else (False,) * 5 for i, row in enumerate(seed[0]))
    needs = row_needs((first,) + seed[1:], output_rows(2))
    assert needs.held == reachable((first,) + seed[1:], output_rows(2))
    assert needs.keys[0][3] == needs.keys[0][4] == () and 3 in needs.held[0]
    assert needs.attending(0) == (2,) and needs.value_rows(0) == (0, 1)


@needs_kernel
@pytest.mark.parametrize("partner", [1, 3, 4, 5, -1], ids=lambda p: f"v+{p}")
def test_tied_logits_count_the_first_maximum_as_torch_argmax_does(partner):
    """W_U's column of every token v equal to that of v + partner (pairs next to each other, three,
    four and five apart, the copy above or below): each pair's logits are equal to the bit, and the
    kernel's accuracy counts the lower of the two as the prediction, as torch.argmax of the same
    logits (the kernel's own: torch's products need not round two equal columns alike)."""
    config = small()
    sd = state_dicts(config, [0], False)[0]
    V = config.task.vocab
    w = sd["unembed.W_U"].clone()
    first = [v for v in range(V) if 0 <= v + partner < V and v % (2 * abs(partner)) < abs(partner)]
    for v in first:
        w[:, v + partner] = w[:, v]
    sd["unembed.W_U"] = w
    data = dataset(config)
    L = config.task.list_len
    ker = Ensemble(config, [sd], backend="kernel")
    assert ker.backend == "kernel"
    logits = ker.predict(data.val_inputs)[0]  # (rows, L, V)
    pred = logits.argmax(-1)
    top = logits.max(-1, keepdim=True).values
    assert ((logits == top).sum(-1) == 2).float().mean() > 0.5  # most maxima are tied pairs
    hits = pred == data.val_targets[:, L + 1:]
    metrics = ker.evaluate(data.val_inputs, data.val_targets)
    assert metrics["acc"][0].item() == pytest.approx(hits.float().mean().item(), abs=1e-9)
    assert metrics["seq_acc"][0].item() == pytest.approx(hits.all(-1).float().mean().item(), abs=1e-9)
