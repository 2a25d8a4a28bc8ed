"""The training engine against the hooked model (logits, gradients), and the ensemble's promises:
member i trains as a single run with seed i, stopped members stay put, a diverging member fails alone.

Both backends are checked: "torch" (any configuration) and "kernel" (the compiled CPU kernel, for
the default constraints); tests of the kernel are skipped where no C compiler is available. On a
machine with cuda or mps, the torch backend is also checked there (``DEVICES``), and the training
tests below run there too (``train.device`` "auto").
"""

import io
import itertools
import logging
import math

import pytest
import torch
import torch.nn.functional as F

from listcopy import cpu_kernel, engine
from listcopy.checkpoint import MODEL_FILE, load_tensors
from listcopy.config import Config
from listcopy.engine import Ensemble
from listcopy.model import ListCopyTransformer, build_model
from listcopy.task import dataset
from listcopy.training import resolve_device, train, train_ensemble

from tests.conftest import run_cli

@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny tensors: one thread is fastest and immune to a busy machine's oversubscription."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


DEVICES = ["cpu"] + [d for d, on in (("cuda", torch.cuda.is_available()),
                                      ("mps", torch.backends.mps.is_available())) if on]

FLAG_COMBOS = list(itertools.product([False, True], [False, True], [False, True], [False, True],
                                     [1, 2]))


def small(**model) -> Config:
    return Config().replace(model={"d_model": 8, "n_layers": 2, **model})


def state_dicts(config, seeds, perturb, scale=0.3):
    """Initial weights; with ``perturb`` every parameter (frozen identities, zero biases, LN) gets
    noise, so that no fast path may assume them."""
    out = []
    for seed in seeds:
        model = build_model(config, torch.Generator().manual_seed(seed))
        if perturb:
            g = torch.Generator().manual_seed(100 + seed)
            with torch.no_grad():
                for p in model.parameters():
                    p.add_(scale * torch.randn(p.shape, generator=g))
        out.append(model.state_dict())
    return out


def batch(config, n, seed):
    """Task inputs, and a few arbitrary token rows, with their output targets."""
    g = torch.Generator().manual_seed(seed)
    data = dataset(config)
    rows = torch.randint(0, data.inputs.shape[0], (n - 4,), generator=g)
    inputs = torch.cat([data.inputs[rows],
                        torch.randint(0, config.task.vocab, (4, config.task.seq_len), generator=g)])
    L = config.task.list_len
    targets = torch.cat([data.targets[rows][:, L + 1:],
                         torch.randint(0, config.task.vocab, (4, L), generator=g)])
    return inputs, targets


def hooked_loss_and_grads(config, sd, inputs, targets):
    model = ListCopyTransformer(config)
    model.load_state_dict(sd)
    L = config.task.list_len
    logits = model(inputs)[:, L + 1:]
    loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1))
    loss.backward()
    grads = {n: p.grad for n, p in model.named_parameters() if p.requires_grad}
    return logits.detach(), loss.detach(), grads


def backends(ens_config, sds, device="cpu"):
    """The torch backend, and on cpu the kernel where it applies (and a compiler exists)."""
    out = [Ensemble(ens_config, sds, device, backend="torch")]
    auto = Ensemble(ens_config, sds, device)
    if auto.backend == "kernel":
        out.append(auto)
    return out


def split(ens, flat_grad, member):
    lay = ens.layout
    return {n: flat_grad[member, o: o + math.prod(s)].view(s)
            for n, s, o in zip(lay.names, lay.shapes, lay.offsets)}


def check_against_hooked(config, sds, n=20, rtol=0.0, device="cpu"):
    """Each backend on ``device`` against the hooked model on CPU."""
    E = len(sds)
    per_member = [batch(config, n, seed=e) for e in range(E)]
    tokens = torch.stack([b[0] for b in per_member])  # (E, n, T)
    targets = torch.stack([b[1] for b in per_member])  # (E, n, L)
    for ens in backends(config, sds, device):
        on = tokens.to(device)
        loss, grad = (t.cpu() for t in ens.loss_and_grad(on, targets.to(device)))
        with torch.no_grad():
            shared = ens.output_logits(on[0]).cpu()  # (E, n, L, V), every member on member 0's batch
        predicted = ens.predict(on[0]).cpu()
        for e in range(E):
            logits, ref_loss, ref_grads = hooked_loss_and_grads(config, sds[e], tokens[e], targets[e])
            ref_shared = hooked_loss_and_grads(config, sds[e], tokens[0], targets[0])[0]
            assert torch.allclose(shared[e], ref_shared, atol=1e-5, rtol=rtol), ens.backend
            assert torch.allclose(predicted[e], ref_shared, atol=1e-5, rtol=rtol), ens.backend
            assert loss[e].item() == pytest.approx(ref_loss.item(), abs=1e-5, rel=rtol), ens.backend
            mine = split(ens, grad, e)
            assert set(mine) == set(ref_grads)
            for name, ref in ref_grads.items():
                assert torch.allclose(mine[name], ref, atol=1e-5, rtol=rtol), (ens.backend, name)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("perturb", [False, True], ids=["init", "perturbed"])
@pytest.mark.parametrize("ln,use_bias,freeze_wv,freeze_wo,n_heads", FLAG_COMBOS)
def test_logits_and_gradients_equal_the_hooked_model(ln, use_bias, freeze_wv, freeze_wo, n_heads,
                                                     perturb, device):
    config = small(ln=ln, use_bias=use_bias, freeze_wv=freeze_wv, freeze_wo=freeze_wo,
                   n_heads=n_heads)
    check_against_hooked(config, state_dicts(config, [0, 1], perturb), device=device)


def has_kernel():
    return Ensemble(small(), state_dicts(small(), [0], False)).backend == "kernel"


needs_kernel = pytest.mark.skipif(not has_kernel(), reason="no C compiler: no CPU kernel")


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
    sds = state_dicts(config, [0, 1, 2], False)
    data = dataset(config)
    L = config.task.list_len
    inputs, targets = data.train_inputs, data.train_targets[:, L + 1:].contiguous()
    g = torch.Generator().manual_seed(0)
    batches = torch.stack([torch.randperm(8000, generator=g)[:40 * 32].view(40, 32) for _ in range(3)])
    lr = torch.tensor([1e-3, 3e-3, 1e-2])
    wd = torch.tensor([0.01, 0.0, 0.1])
    active = torch.ones(3, dtype=torch.bool)
    out = []
    for ens in backends(config, sds):
        loss = torch.zeros(3, dtype=torch.float64)
        ens.train_steps(inputs, targets, batches, 5, 50, lr, wd, active, loss)
        out.append((ens, loss, ens.evaluate(data.val_inputs, data.val_targets)))
    (ref, ref_loss, ref_metrics), (ker, ker_loss, ker_metrics) = out
    assert ref.adam_step == ker.adam_step == 50
    for a, b in [(ref.flat, ker.flat), (ref.exp_avg, ker.exp_avg), (ref.exp_avg_sq, ker.exp_avg_sq)]:
        assert torch.allclose(a.detach(), b.detach(), atol=1e-5, rtol=1e-4)
    assert torch.allclose(ref_loss, ker_loss, atol=1e-4)
    for key in ("loss", "acc", "seq_acc"):
        assert torch.allclose(ref_metrics[key], ker_metrics[key], atol=1e-4), key


@pytest.mark.parametrize("backend", ["torch", "kernel"])
def test_stopped_members_neither_change_nor_count(backend):
    config = small()
    sds = state_dicts(config, [0, 1, 2], False)
    if backend == "kernel" and not has_kernel():
        pytest.skip("no C compiler")
    ens = Ensemble(config, sds, backend=backend)
    data = dataset(config)
    inputs, targets = data.train_inputs, data.train_targets[:, 3:].contiguous()
    batches = torch.arange(8 * 3 * 16).view(3, 8, 16)
    lr, wd = torch.full((3,), 1e-2), torch.full((3,), 0.01)
    loss = torch.zeros(3, dtype=torch.float64)
    ens.train_steps(inputs, targets, batches, 0, 3, lr, wd, torch.ones(3, dtype=torch.bool), loss)
    before = [t.detach().clone() for t in (ens.flat, ens.exp_avg, ens.exp_avg_sq)]
    active = torch.tensor([True, False, True])
    loss.zero_()
    ens.train_steps(inputs, targets, batches, 3, 7, lr, wd, active, loss)
    after = [t.detach() for t in (ens.flat, ens.exp_avg, ens.exp_avg_sq)]
    for a, b in zip(before, after):
        assert torch.equal(a[1], b[1])
        assert not torch.equal(a[0], b[0]) and not torch.equal(a[2], b[2])
    assert loss[1] == 0 and loss[0] > 0
    metrics = ens.evaluate(data.val_inputs, data.val_targets, active=active)
    assert math.isnan(metrics["acc"][1]) and not math.isnan(metrics["acc"][0])


def short(steps, *extra):
    return Config().override([f"train.max_steps={steps}", "train.eval_every=100", *extra])


TORCH_SHAPE = ("model.use_bias=true", "task.n_digits=20", "train.batch_size=32")  # torch backend


def assert_same_weights(config, mine, ref):
    """Equal within 1e-5, except b_K off the CPU: it shifts every score of a query by the same
    amount, so softmax makes its gradient zero in exact arithmetic and AdamW walks it on rounding
    noise, which another device's batched matmuls (other E, other algorithm) round differently.
    It cannot change any output: the outputs are held equal too."""
    on_cpu = resolve_device("auto").type == "cpu"
    bad = [k for k, v in ref.items() if v.is_floating_point()
           and (on_cpu or not k.endswith(".b_K"))
           and not torch.allclose(mine[k], v, atol=1e-5, rtol=0)]
    assert not bad, bad
    inputs = dataset(config).val_inputs[:256]
    logits = []
    for state in (mine, ref):
        model = ListCopyTransformer(config)
        model.load_state_dict(state)
        with torch.no_grad():
            logits.append(model(inputs))
    assert torch.allclose(*logits, atol=1e-4, rtol=0)


@pytest.mark.parametrize("extra", [(), TORCH_SHAPE], ids=["kernel", "torch"])
def test_member_i_of_an_ensemble_is_the_single_run_with_seed_i(extra):
    configs = [short(300, f"train.seed={s}", *extra) for s in (0, 1, 2)]
    together = train_ensemble(configs, progress=False)
    for config, member in zip(configs, together):
        alone = train(config, progress=False)
        assert member.step == alone.step == 300
        assert_same_weights(config, member.state, alone.state)
        assert [h["step"] for h in member.history] == [100, 200, 300]
        for mine, ref in zip(member.history, alone.history):
            assert mine["acc"] == pytest.approx(ref["acc"], abs=1e-3)
            assert mine["train_loss"] == pytest.approx(ref["train_loss"], abs=1e-4)


@pytest.mark.parametrize("extra,threshold", [((), 0.04), (TORCH_SHAPE, 0.2)], ids=["kernel", "torch"])
def test_early_stopped_members_keep_their_stop_step_weights(extra, threshold, tmp_path):
    """Member 1 stops early (its threshold is reached at the evaluation of step 200), member 2 at
    its own max_steps (300); both end with the weights a single run stopped at that step has, while
    member 0 trains on to 400."""
    configs = [short(400, "train.seed=0", *extra),
               short(400, "train.seed=1", f"train.early_stop_acc={threshold}", *extra),
               short(300, "train.seed=2", *extra)]
    runs = train_ensemble(configs, [tmp_path / str(i) for i in range(3)], progress=False)
    assert [r.step for r in runs] == [400, 200, 300]
    assert [r.stop_reason for r in runs] == ["max_steps", "early_stop", "max_steps"]
    assert runs[1].steps_to_threshold == 200
    for member, steps in ((1, 200), (2, 300)):
        alone = train(configs[member].override([f"train.max_steps={steps}"]), progress=False)
        assert_same_weights(configs[member], runs[member].state, alone.state)
        disk, _ = load_tensors(tmp_path / str(member) / MODEL_FILE)  # and so does its run dir
        assert torch.equal(disk["embed.W_E"], runs[member].state["embed.W_E"])


@pytest.mark.parametrize("extra", [(), TORCH_SHAPE], ids=["kernel", "torch"])
def test_a_diverging_member_fails_alone(extra):
    configs = [short(200, "train.seed=0", *extra), short(200, "train.seed=1", "train.lr=1e30", *extra),
               short(200, "train.seed=2", *extra)]
    runs = train_ensemble(configs, progress=False)
    assert runs[1].status == "failed" and runs[1].stop_reason == "non_finite"
    assert runs[1].step == 100 and "non-finite" in runs[1].error
    for r in (runs[0], runs[2]):
        assert r.status == "done" and r.step == 200
        assert all(torch.isfinite(v).all() for k, v in r.state.items() if not k.endswith("IGNORE"))
        assert math.isfinite(r.history[-1]["train_loss"])


def test_no_compiler_falls_back_to_torch_with_a_notice(tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("CC", str(tmp_path / "no-such-cc"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    config = small()
    with caplog.at_level(logging.WARNING, logger="listcopy"):
        ens = Ensemble(config, state_dicts(config, [0], False))
    assert ens.backend == "torch"
    notices = [r.getMessage() for r in caplog.records]
    assert len(notices) == 1 and "torch engine" in notices[0] and "\n" not in notices[0]
    with pytest.raises(ValueError, match="cannot train"):
        Ensemble(config, state_dicts(config, [0], False), backend="kernel")


def test_kernel_refuses_what_it_cannot_run():
    config = small(use_bias=True)
    with pytest.raises(ValueError, match="no biases"):
        Ensemble(config, state_dicts(config, [0], False), backend="kernel")
    assert Ensemble(config, state_dicts(config, [0], False)).backend == "torch"
    assert cpu_kernel.MAX_D_MODEL >= 8 and engine.BACKENDS[0] == "auto"


@needs_kernel
def test_kernel_validates_token_ranges():
    config = small()
    ens = Ensemble(config, state_dicts(config, [0], False))
    bad = torch.full((4, config.task.seq_len), config.task.vocab)
    with pytest.raises(ValueError, match="tokens must be in"):
        ens.predict(bad)
    data = dataset(config)
    with pytest.raises(ValueError, match="batch rows"):
        ens.train_steps(data.train_inputs, data.train_targets[:, 3:], torch.full((1, 2, 4), 10**6),
                        0, 1, torch.ones(1), torch.ones(1), torch.ones(1, dtype=torch.bool),
                        torch.zeros(1, dtype=torch.float64))


def test_bench_reports_every_run():
    import json

    from listcopy.bench import run_bench

    buf = io.StringIO()
    result = run_bench(threads=1, steps=100, as_json=True, out=buf)
    assert json.loads(buf.getvalue()) == json.loads(json.dumps(result))
    assert [r["run"] for r in result["rows"]] == ["notebook loop", "engine E=1", "engine E=8",
                                                  "engine E=64"]
    assert result["rows"][0]["speedup"] == pytest.approx(1.0)
    assert all(r["ms_per_step"] > 0 for r in result["rows"])
    assert result["threads"] == 1 and result["cpu"] and result["torch"] == torch.__version__
    assert torch.get_num_threads() == 1  # restored (the autouse fixture set 1)
    assert result["device"] == "cpu" and "peak_gpu_mb" not in result["rows"][0]


@pytest.mark.parametrize("device", DEVICES)
def test_bench_on_a_device_with_other_sizes(device):
    from listcopy.bench import format_table, run_bench

    result = run_bench(steps=100, device=device, sizes=(3, 1), out=io.StringIO())
    assert [r["run"] for r in result["rows"]] == ["notebook loop", "engine E=1", "engine E=3"]
    assert result["device"].startswith(device)
    assert [r["members"] for r in result["rows"]] == [1, 1, 3]
    assert result["rows"][2]["ms_per_model_step"] == pytest.approx(result["rows"][2]["ms_per_step"] / 3)
    if device == "cuda":
        assert all(r["peak_gpu_mb"] > 0 for r in result["rows"]) and result["gpu"]
        assert "peak GPU MB" in format_table(result)


@pytest.mark.parametrize("args,problem", [
    (["--sizes", "8,x"], "--sizes"), (["--sizes", "0"], "--sizes"), (["--steps", "5"], "--steps"),
    (["--threads", "0"], "--threads")])
def test_bench_refuses_bad_arguments_in_one_line(args, problem):
    result = run_cli("bench", *args)
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.count("\n") == 1 and problem in result.stderr


@needs_kernel
def test_kernel_builds_where_the_cache_cannot_be_written(tmp_path, monkeypatch):
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("")
    monkeypatch.setenv("XDG_CACHE_HOME", str(blocker))
    config = small(n_layers=1)  # a shape no other test builds in this process
    assert Ensemble(config, state_dicts(config, [0], False)).backend == "kernel"


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
    plan = ens._plan(frozenset({2, 3, 4}))
    first, last = plan.layers
    assert (first.q_var, first.k_var, first.v_var) == ((), (0, 1), (0, 1))
    assert set(first.out_const) == {3, 4} and set(first.out_var) == {2}
    assert (last.q_var, last.k_var, last.v_var) == ((), (2,), (2,))
    assert set(last.out_var) == {3, 4} and last.out_const == ()
