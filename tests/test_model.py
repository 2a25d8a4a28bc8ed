"""The hooked model against an independent loop-based forward, TransformerLens 3.9 fixtures
(the seed's own HookedTransformer) and the interpretability invariants of the task."""

import itertools
import json
import math

import pytest
import torch

from listcopy.config import Config
from listcopy.model import ListCopyTransformer, build_model
from listcopy.task import dataset

FLAGS = ("ln", "use_bias", "freeze_wv", "freeze_wo", "n_heads")


def config_for(ln=False, use_bias=False, freeze_wv=True, freeze_wo=True, n_heads=1, n_layers=3):
    return Config().replace(model=dict(ln=ln, use_bias=use_bias, freeze_wv=freeze_wv,
                                       freeze_wo=freeze_wo, n_heads=n_heads, n_layers=n_layers))


def perturbed(config, seed=0):
    """A model whose every parameter (biases, LN and frozen identities included) matters."""
    model = build_model(config, torch.Generator().manual_seed(seed))
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.3 * torch.randn(p.shape, generator=g))
    return model


def reference_logits(model: ListCopyTransformer, tokens: torch.Tensor) -> torch.Tensor:
    """Plain loops in float64, written from the definition, allowed keys from the hand rule."""
    sd = {k: v.double() for k, v in model.state_dict().items() if v.is_floating_point()}
    cfg, L = model.config.model, model.config.task.list_len
    T, H, d = tokens.shape[1], cfg.n_heads, cfg.d_head

    def allowed(q, k):
        if q == 0:
            return k == 0
        if q <= L:
            return k < q
        return L <= k < q

    def ln(x, w, b):
        x = x - x.mean()
        return x / math.sqrt((x * x).mean() + 1e-5) * w + b

    out = torch.zeros(tokens.shape[0], T, sd["unembed.W_U"].shape[1], dtype=torch.float64)
    for n, seq in enumerate(tokens.tolist()):
        resid = [sd["embed.W_E"][tok] + sd["pos_embed.W_pos"][t] for t, tok in enumerate(seq)]
        for layer in range(cfg.n_layers):
            p = lambda name: sd[f"blocks.{layer}.{name}"]  # noqa: E731
            x = [ln(r, p("ln1.w"), p("ln1.b")) if cfg.ln else r for r in resid]
            new = []
            for qpos in range(T):
                acc = p("attn.b_O").clone()
                for h in range(H):
                    q = x[qpos] @ p("attn.W_Q")[h] + p("attn.b_Q")[h]
                    keys = [k for k in range(T) if allowed(qpos, k)]
                    scores = [float(q @ (x[k] @ p("attn.W_K")[h] + p("attn.b_K")[h])) / math.sqrt(d)
                              for k in keys]
                    top = max(scores)
                    weights = [math.exp(s - top) for s in scores]
                    total = sum(weights)
                    z = sum((w / total) * (x[k] @ p("attn.W_V")[h] + p("attn.b_V")[h])
                            for w, k in zip(weights, keys))
                    acc = acc + z @ p("attn.W_O")[h]
                new.append(resid[qpos] + acc)
            resid = new
        for t in range(T):
            r = ln(resid[t], sd["ln_final.w"], sd["ln_final.b"]) if cfg.ln else resid[t]
            out[n, t] = r @ sd["unembed.W_U"] + sd["unembed.b_U"]
    return out


def test_default_parameter_counts():
    model = build_model(Config())
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert (total, trainable) == (2621, 2040)


@pytest.mark.parametrize("flags", [dict(), dict(ln=True), dict(use_bias=True),
                                   dict(freeze_wv=False, freeze_wo=False),
                                   dict(n_heads=2, ln=True, use_bias=True, freeze_wo=False)])
def test_logits_equal_a_loop_reference(flags):
    model = perturbed(config_for(**flags))
    tokens = dataset(Config()).val_inputs[:6]
    expected = reference_logits(model, tokens)
    assert torch.allclose(model(tokens).double(), expected, atol=1e-4)


def test_init_replays_the_notebooks_generator(fixtures):
    """listcopy's initial weights are those the seed's make_model() drew (TransformerLens 3.9)."""
    from safetensors.torch import load_file

    fx = load_file(fixtures / "seed_train_1000.safetensors")
    init = {k[len("init."):]: v for k, v in fx.items() if k.startswith("init.")}
    ours = build_model(Config()).state_dict()
    assert set(init) == set(ours)
    for k, v in ours.items():
        if not k.endswith(".mask"):  # TransformerLens 3.x keeps an empty (0, 0) causal-mask buffer
            assert torch.equal(v, init[k].to(v.dtype)), k


@pytest.mark.parametrize("flags", [dict(zip(FLAGS, v)) for v in itertools.product(
    (False, True), (False, True), (False, True), (False, True), (1, 2))])
def test_initial_state_draws_what_a_hand_written_gpt2_init_draws(flags):
    """InitialState (the ensemble's members are drawn by it) against the init written out: every
    ``W_*`` from Normal(0, 0.8/sqrt(D)) in named_parameters order, then frozen W_V / W_O set to
    identities, zero biases, unit LayerNorm weights; and the generator left in the same state."""
    from listcopy.model import InitialState, ListCopyCore

    config = config_for(**flags)
    cfg = config.model
    model = ListCopyCore(config)
    g_ref, g_ours = torch.Generator().manual_seed(7), torch.Generator().manual_seed(7)
    expected = {}
    for name, p in model.named_parameters():
        leaf = name.rsplit(".", 1)[-1]
        if leaf.startswith("W_"):
            expected[name] = torch.randn(p.shape, generator=g_ref) * (0.8 / math.sqrt(cfg.d_model))
        else:
            expected[name] = torch.zeros(p.shape) if leaf.startswith("b") else torch.ones(p.shape)
        eye = (leaf == "W_V" and cfg.freeze_wv) or (leaf == "W_O" and cfg.freeze_wo)
        if eye:
            expected[name] = torch.stack([torch.eye(*p.shape[1:])] * cfg.n_heads)
    state = InitialState(model).draw(g_ours)
    assert list(state) == list(model.state_dict())  # the state dict's keys and order
    for name, value in expected.items():
        assert torch.allclose(state[name], value, rtol=1e-6, atol=0), name
    assert torch.equal(g_ours.get_state(), g_ref.get_state())
    assert torch.equal(state["blocks.0.attn.mask"], model.state_dict()["blocks.0.attn.mask"])


def test_state_dict_has_the_seeds_names_shapes_and_order(fixtures):
    """Names, order and dtypes as TransformerLens 3.9 writes them; the causal-mask buffer is
    (n_ctx, n_ctx) as in the seed's TransformerLens 2.x checkpoints (REFERENCE.md), where 3.9
    keeps an empty (0, 0) one and accepts both on load."""
    ref = json.loads((fixtures / "tl3_state_dict_keys.json").read_text())
    ours = build_model(Config()).state_dict()
    assert [e["key"] for e in ref["state_dict"]] == list(ours)
    for e in ref["state_dict"]:
        expected = [5, 5] if e["key"].endswith(".mask") else e["shape"]
        assert list(ours[e["key"]].shape) == expected
        assert str(ours[e["key"]].dtype) == f"torch.{e['dtype']}"


def _flag_combos(fixtures):
    meta = json.loads((fixtures / "tl3_flags.json").read_text())
    return meta["common"], meta["combos"]


@pytest.mark.parametrize("i", range(32))
def test_same_math_as_transformerlens3_for_every_flag_combination(fixtures, i):
    from safetensors.torch import load_file

    common, combos = _flag_combos(fixtures)
    combo = combos[i]
    config = config_for(n_layers=common["n_layers"], **combo["flags"])
    fx = load_file(fixtures / combo["file"])
    prefix = f"c{i}."
    state = {k[len(prefix):]: v for k, v in fx.items() if k.startswith(prefix)}
    tokens = state.pop("tokens")
    logits = state.pop("logits")
    patterns = [state.pop(f"pattern{L}") for L in range(config.model.n_layers)]
    resids = [state.pop(f"resid_post{L}") for L in range(config.model.n_layers)]
    model = ListCopyTransformer(config)
    model.load_state_dict(state, strict=True)
    ours = [{"name": n, "shape": list(p.shape), "requires_grad": p.requires_grad}
            for n, p in model.named_parameters()]
    assert ours == combo["named_parameters"]  # names, order (init draws) and what is frozen
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert trainable == combo["trainable_params"]
    out, cache = model.run_with_cache(tokens)
    assert torch.allclose(out, logits, atol=1e-5)
    for layer in range(config.model.n_layers):
        assert torch.allclose(cache["pattern", layer], patterns[layer], atol=1e-6)
        assert torch.allclose(cache["resid_post", layer], resids[layer], atol=1e-5)


def test_later_tokens_never_change_earlier_positions():
    model = perturbed(config_for(ln=True, use_bias=True, n_heads=2, freeze_wo=False))
    g = torch.Generator().manual_seed(5)
    base = torch.randint(0, 101, (8, 5), generator=g)
    ref = model(base)
    for pos in range(5):
        changed = base.clone()
        changed[:, pos] = (changed[:, pos] + 1 + torch.randint(0, 99, (8,), generator=g)) % 101
        out = model(changed)
        assert torch.equal(out[:, :pos], ref[:, :pos]), pos
        assert not torch.allclose(out[:, pos:], ref[:, pos:])


def test_outputs_see_the_inputs_only_through_sep():
    model = perturbed(Config())
    data = dataset(Config())
    tokens = data.val_inputs[:32]
    other = tokens.clone()
    other[:, :2] = (other[:, :2] + 37) % 100  # new d1, d2

    def zero_sep(resid, hook):
        resid = resid.clone()
        resid[:, 2] = 0.0
        return resid

    hooks = [(f"blocks.{L}.hook_resid_pre", zero_sep) for L in range(3)]
    a = model.run_with_hooks(tokens, fwd_hooks=hooks)[:, 3:]
    b = model.run_with_hooks(other, fwd_hooks=hooks)[:, 3:]
    assert torch.equal(a, b)
    assert not torch.allclose(model(tokens)[:, 3:], model(other)[:, 3:])  # without: they depend
    assert all(not hp.fwd_hooks for hp in model.hook_dict.values())  # hooks were temporary


def test_outputs_never_attend_to_input_digits():
    model = perturbed(config_for(n_heads=2, ln=True, use_bias=True))
    _, cache = model.run_with_cache(dataset(Config()).val_inputs[:64])
    for layer in range(3):
        pattern = cache["pattern", layer]  # (B, H, Q, K)
        assert pattern.shape == (64, 2, 5, 5)
        assert (pattern[:, :, 3:, :2] == 0).all()
        assert torch.allclose(pattern.sum(-1), torch.ones(64, 2, 5))
    assert torch.equal(cache["pattern", -1], cache["blocks.2.attn.hook_pattern"])


def test_hook_attn_scores_sees_masked_scores_and_can_replace_them():
    """The seed's mean-attention trick: a hook at hook_attn_scores sets the pattern."""
    model = build_model(Config())
    tokens = dataset(Config()).val_inputs[:4]
    seen = {}

    def grab(scores, hook):
        seen[hook.name] = scores.clone()

    model.run_with_hooks(tokens, fwd_hooks=[("blocks.0.attn.hook_attn_scores", grab)])
    s = seen["blocks.0.attn.hook_attn_scores"]
    assert torch.isinf(s[:, :, 3:, :2]).all() and torch.isinf(s[:, :, 0, 1:]).all()
    target = torch.full((5, 5), 0.2)

    def uniform(scores, hook):
        return target.log().expand_as(scores)

    with model.hooks(fwd_hooks=[("blocks.1.attn.hook_attn_scores", uniform)]):
        _, cache = model.run_with_cache(tokens)
    assert torch.allclose(cache["pattern", 1], torch.full((4, 1, 5, 5), 0.2))
    assert all(not hp.fwd_hooks for hp in model.hook_dict.values())


@pytest.mark.parametrize("flags", [dict(), dict(ln=True, use_bias=True, freeze_wv=False,
                                                 freeze_wo=False, n_heads=2)])
def test_the_core_is_the_hooked_model_without_transformerlens(flags):
    """ListCopyCore (identity hook slots) and ListCopyTransformer: one state dict, one init, the
    same logits, the same trainable flags; only the hooked one has hook points."""
    from listcopy.model import ListCopyCore

    config = config_for(**flags)
    hooked = perturbed(config)
    core = ListCopyCore(config)
    core.load_state_dict(hooked.state_dict())
    tokens = dataset(config).val_inputs[:64]
    assert torch.equal(core(tokens), hooked(tokens))
    assert ([(n, p.requires_grad) for n, p in core.named_parameters()]
            == [(n, p.requires_grad) for n, p in hooked.named_parameters()])
    fresh = build_model(config, hooks=False).state_dict()
    assert all(torch.equal(v, build_model(config).state_dict()[k]) for k, v in fresh.items())
    assert not hasattr(core, "hook_dict") and "blocks.0.attn.hook_pattern" in hooked.hook_dict


def test_training_and_the_model_commands_never_import_transformerlens(tmp_path):
    """TransformerLens takes seconds to import: train, eval, info and export do without it."""
    import subprocess
    import sys

    code = ("import sys\nfrom listcopy.cli import main\n"
            "for argv in sys.argv[1:]:\n"
            "    assert main(argv.split()) == 0, argv\n"
            "print('transformer_lens' in sys.modules)")
    run, pt = tmp_path / "r", tmp_path / "r.pt"
    tiny = ("--set task.n_digits=10 --set train.max_steps=20 --set train.eval_every=10 "
            "--set train.batch_size=16 --quiet")
    commands = [f"train {tiny} --out {run}", f"eval {run}", f"info {run}",
                f"export {run} --out {pt}"]
    out = subprocess.run([sys.executable, "-c", code, *commands], capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.strip().splitlines()[-1] == "False", out.stderr
