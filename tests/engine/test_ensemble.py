"""The ensemble's promises: member i trains as a single run with seed i, stopped members stay put,
a diverging member fails alone, and the backends refuse what they cannot run.
"""

import math

import pytest
import torch

from listcopy import engine
from listcopy.checkpoint import MODEL_FILE, load_tensors
from listcopy.config import Config
from listcopy.engine import Ensemble, choice
from listcopy.engine.kernel import MAX_D_MODEL
from listcopy.model import ListCopyTransformer
from listcopy.task import dataset
from listcopy.training import resolve_device, train, train_ensemble

from .helpers import has_kernel, needs_kernel, small, state_dicts


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
    before = [t.detach().clone() for t in (ens.params.flat, ens.optim.exp_avg,
                                            ens.optim.exp_avg_sq)]
    active = torch.tensor([True, False, True])
    loss.zero_()
    ens.train_steps(inputs, targets, batches, 3, 7, lr, wd, active, loss)
    after = [t.detach() for t in (ens.params.flat, ens.optim.exp_avg, ens.optim.exp_avg_sq)]
    for a, b in zip(before, after):
        assert torch.equal(a[1], b[1])
        assert not torch.equal(a[0], b[0]) and not torch.equal(a[2], b[2])
    assert loss[1] == 0 and loss[0] > 0
    metrics = ens.evaluate(data.val_inputs, data.val_targets, active=active)
    assert math.isnan(metrics["acc"][1]) and not math.isnan(metrics["acc"][0])


def short(steps, *extra):
    return Config().override([f"train.max_steps={steps}", "train.eval_every=100", *extra])


TORCH_SHAPE = ("model.use_bias=true", "task.n_digits=20", "train.batch_size=32")  # torch backend


def choose(monkeypatch, extra):
    """TORCH_SHAPE trains with the torch backend: choice.py's table picks it for every width."""
    if extra:
        monkeypatch.setattr(choice, "CPU_TABLE", ((1 << 30, choice.Pick("torch")),))


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
def test_member_i_of_an_ensemble_is_the_single_run_with_seed_i(extra, monkeypatch):
    choose(monkeypatch, extra)
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
def test_early_stopped_members_keep_their_stop_step_weights(extra, threshold, tmp_path, monkeypatch):
    """Member 1 stops early (its threshold is reached at the evaluation of step 200), member 2 at
    its own max_steps (300); both end with the weights a single run stopped at that step has, while
    member 0 trains on to 400."""
    choose(monkeypatch, extra)
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


def test_without_early_stop_members_train_on_and_record_their_threshold():
    """``early_stop=False`` (the benchmarks' fixed-length runs): the member whose threshold is
    reached at step 200 trains to its max_steps, records step 200 as reached, and ends where a
    run that never reaches its threshold ends."""
    configs = [short(400, "train.seed=1", "train.early_stop_acc=0.04"),
               short(300, "train.seed=1", "train.early_stop_acc=0.04")]
    runs = train_ensemble(configs, progress=False, early_stop=False)
    assert [r.step for r in runs] == [400, 300]
    assert [r.stop_reason for r in runs] == ["max_steps", "max_steps"]
    assert [r.steps_to_threshold for r in runs] == [200, 200]
    assert [h["step"] for h in runs[0].history] == [100, 200, 300, 400]
    never = train(configs[0].override(["train.early_stop_acc=1.0"]), progress=False)
    assert never.steps_to_threshold is None
    assert_same_weights(configs[0], runs[0].state, never.state)


@pytest.mark.parametrize("extra", [(), TORCH_SHAPE], ids=["kernel", "torch"])
def test_a_diverging_member_fails_alone(extra, monkeypatch):
    choose(monkeypatch, extra)
    configs = [short(200, "train.seed=0", *extra), short(200, "train.seed=1", "train.lr=1e30", *extra),
               short(200, "train.seed=2", *extra)]
    runs = train_ensemble(configs, progress=False)
    assert runs[1].status == "failed" and runs[1].stop_reason == "non_finite"
    assert runs[1].step == 100 and "non-finite" in runs[1].error
    for r in (runs[0], runs[2]):
        assert r.status == "done" and r.step == 200
        assert all(torch.isfinite(v).all() for k, v in r.state.items() if not k.endswith("IGNORE"))
        assert math.isfinite(r.history[-1]["train_loss"])


def test_kernel_refuses_what_it_cannot_run():
    """The kernel takes every flag now; it refuses a model wider than it is built for (and any
    device but the CPU, tests/engine/test_devices.py), where "auto" trains with torch."""
    config = small(d_model=MAX_D_MODEL + 8, n_layers=1)
    with pytest.raises(ValueError, match=f"d_model > {MAX_D_MODEL}"):
        Ensemble(config, state_dicts(config, [0], False), backend="kernel")
    assert Ensemble(config, state_dicts(config, [0], False)).backend == "torch"
    assert MAX_D_MODEL >= 128 and engine.BACKENDS[0] == "auto"


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


@pytest.mark.parametrize("backend", ["torch", pytest.param("kernel", marks=needs_kernel)])
def test_one_member_off_the_identities_turns_the_shortcut_off_for_all(backend):
    """WeightFacts over all members at once: a frozen W_V that is not the identity (a loaded
    checkpoint's) in one member, or a frozen bias that is not zero in another, turns off the
    slice and no-bias shortcuts for the ensemble, and each member's logits stay its model's."""
    config = Config()
    sds = state_dicts(config, [0, 1, 2], False)
    assert Ensemble(config, sds, backend=backend).facts == engine.params.WeightFacts(
        identity_v=True, identity_o=True, bias=False)
    g = torch.Generator().manual_seed(5)
    sds[1]["blocks.2.attn.W_V"] = sds[1]["blocks.2.attn.W_V"] + 0.1 * torch.randn(1, 8, 8, generator=g)
    sds[2]["blocks.0.attn.b_Q"] = 0.5 * torch.randn(1, 8, generator=g)
    ens = Ensemble(config, sds, backend=backend)
    assert ens.facts == engine.params.WeightFacts(identity_v=False, identity_o=True, bias=True)
    tokens = dataset(config).val_inputs[:50]
    logits = ens.predict(tokens)
    for i, sd in enumerate(sds):
        model = ListCopyTransformer(config)
        model.load_state_dict(sd)
        assert torch.allclose(logits[i], model(tokens)[:, -2:], atol=1e-4), i


def test_the_torch_evaluation_is_the_same_in_chunks_of_any_size(monkeypatch):
    """The torch path evaluates the validation lists in chunks (resources.eval_chunk: larger on
    an accelerator): one list, 7 lists, a training batch or all at once give the same metrics;
    the default on the CPU takes EVAL_CHUNK // E lists per forward pass."""
    from listcopy import resources

    config = Config().override(list(TORCH_SHAPE))
    ens = Ensemble(config, state_dicts(config, range(3), False), backend="torch")
    data = dataset(config)
    n = data.val_inputs.shape[0]
    metrics = [ens.evaluate(data.val_inputs, data.val_targets, chunk=c) for c in (1, 7, 32, n)]
    for key in ("loss", "acc", "seq_acc"):
        for m in metrics[1:]:
            assert torch.allclose(m[key], metrics[0][key], rtol=1e-5, atol=1e-7), key
    calls = []
    logits = ens._backend.forward.logits
    monkeypatch.setattr(ens._backend.forward, "logits", lambda *a: calls.append(a[1].shape[0])
                        or logits(*a))
    monkeypatch.setattr(resources, "EVAL_CHUNK", 3 * 10)  # 10 lists per pass for 3 members
    ens.evaluate(data.val_inputs, data.val_targets)
    assert calls == [10] * (n // 10) + ([n % 10] if n % 10 else [])
