"""Checkpoint inference (infer.py): the config of a ``.pt`` state dict from its tensors, then its
name, then ``--set``; conflicts and ambiguity as one line naming the file (exit 2)."""

import pytest
import torch

from listcopy.checkpoint import CheckpointError, load
from listcopy.config import Config
from listcopy.model import build_model
from tests.conftest import FIXTURES, run_cli


def save(tmp_path, name, config, mutate=None, seed=0):
    """A state dict as the line's save_model writes it (torch.save of state_dict())."""
    state = build_model(config, torch.Generator().manual_seed(seed)).state_dict()
    if mutate:
        state = mutate(state)
    path = tmp_path / f"{name}.pt"
    torch.save(state, path)
    return path


LINE = ["task.mask_token=true", "model.layer0_mask=true"]


def line_config(*extra):
    return Config().override([*LINE, *extra])


@pytest.mark.parametrize("extra", [
    [],
    ["model.ln=true", "model.use_bias=true", "model.freeze_wv=false", "model.freeze_wo=false"],
    ["model.n_heads=2", "model.n_layers=2", "task.list_len=3", "task.n_digits=10"],
    ["model.freeze_wo=false", "model.d_model=16"],
])
def test_the_tensors_say_the_model_and_the_name_the_digits(tmp_path, extra):
    """Every flag inferred from the tensors alone (non-zero biases: trained ones are; here
    perturbed) under a name that says only layers, digits and d_model (the paper's format)."""
    config = line_config(*extra)

    def trained(state):
        return {k: v + 0.01 if k.rsplit(".", 1)[-1].startswith("b_") and config.model.use_bias
                else v for k, v in state.items()}

    t, m = config.task, config.model
    length = f"_{t.list_len}len" if t.list_len != 2 else ""
    path = save(tmp_path, f"{m.n_layers}layer_{t.n_digits}dig_{m.d_model}d{length}_run7", config,
                trained)
    lines = []
    model, got = load(path, notice=lines.append)
    assert got.task == config.task and got.model == config.model
    assert len(lines) == 1 and str(path) in lines[0] and got.name in lines[0]
    tokens = torch.randint(0, t.vocab, (4, t.seq_len))
    reference = build_model(config, torch.Generator().manual_seed(0))
    reference.load_state_dict(trained(reference.state_dict()))
    assert torch.equal(model(tokens), reference(tokens))


@pytest.mark.parametrize("name,extra", [
    ("2layer_10dig_16d", ["task.list_len=3", "task.n_digits=10", "model.n_layers=2",
                          "model.d_model=16"]),
    ("3layer_100dig_8d_l0mask_mask", ["task.list_len=4", *LINE]),
    ("L1_H1_D8_V100_ln", ["task.list_len=3", "model.n_layers=1", "model.ln=true", *LINE]),
])
def test_a_name_without_a_length_leaves_it_to_the_tensors(tmp_path, name, extra):
    """The seed's and the paper's names never give the list length (the line's only as len3):
    lists of 3 or 4 under such a name load as they are, and eval runs (exit 0)."""
    config = Config().override(extra)
    path = save(tmp_path, name, config)
    _, got = load(path)
    assert got.task == config.task and got.model == config.model
    done = run_cli("eval", str(path))
    assert done.returncode == 0 and "acc" in done.stdout, done.stderr


def test_the_seeds_variant_and_the_mixed_ones(tmp_path):
    seed = Config().override(["model.d_model=16"])
    _, got = load(save(tmp_path, "3layer_100dig_16d", seed))
    assert not got.task.mask_token and not got.model.layer0_mask and got.task.vocab == 101
    mask_only = Config().override(["task.mask_token=true"])
    _, got = load(save(tmp_path, mask_only.name, mask_only))
    assert got.task.mask_token and not got.model.layer0_mask
    l0_only = Config().override(["model.layer0_mask=true"])
    _, got = load(save(tmp_path, l0_only.name, l0_only))
    assert got.model.layer0_mask and not got.task.mask_token


def test_the_layer0_mask_follows_mask_by_default_and_set_settles_it(tmp_path):
    path = save(tmp_path, "2layer_100dig_8d", line_config("model.n_layers=2"))
    lines = []
    _, got = load(path, notice=lines.append)
    assert got.model.layer0_mask and "--set model.layer0_mask=false" in lines[0]
    _, got = load(path, ["model.layer0_mask=false"])
    assert got.task.mask_token and not got.model.layer0_mask


def test_without_a_name_the_default_digits_are_taken_where_they_fit(tmp_path):
    _, got = load(save(tmp_path, "model", line_config()))
    assert got.task.n_digits == 100 and got.task.mask_token
    _, got = load(FIXTURES / "seed_default_1000.pt")
    assert got == Config()


def test_an_ambiguous_vocab_says_which_set_settles_it(tmp_path):
    config = line_config("task.n_digits=20")
    path = save(tmp_path, "final", config)
    with pytest.raises(CheckpointError) as err:
        load(path)
    text = str(err.value)
    assert "final.pt" in text and "vocab of 22" in text and "--set task.n_digits=N" in text
    assert "21 digits" in text and "20 with MASK" in text and "\n" not in text
    _, got = load(path, ["task.n_digits=20"])
    assert got.task.mask_token and got.model.layer0_mask
    _, got = load(path, ["task.mask_token=true"])
    assert got.task.n_digits == 20
    _, got = load(path, ["task.n_digits=21"])
    assert not got.task.mask_token and got.task.sep == 21


@pytest.mark.parametrize("name, mutate, overrides, needles", [
    ("even", lambda s: {**s, "pos_embed.W_pos": torch.zeros(6, 8)}, [],
     ["'pos_embed.W_pos' has 6 positions", "odd"]),
    ("3layer_50dig_8d", None, [], ["vocab of 102 fits no variant of 50 digits"]),
    ("x", None, ["task.n_digits=50"], ["vocab of 102 fits no variant of 50 digits"]),
    ("3layer_100dig_8d_mask_l0mask", None, ["task.mask_token=false"],
     ["100 digits without a MASK token need a vocab of 101"]),
    ("2layer_100dig_8d", None, [], ["unexpected tensor 'blocks.2.attn.W_Q'",
                                    "the name says 2 layers, the tensors hold 3"]),
    ("4layer_100dig_8d", None, [], ["missing tensor 'blocks.3.attn.W_Q'"]),
    ("3layer_100dig_16d", None, [], ["the name says model.d_model = 16, the tensors 8"]),
    ("3layer_100dig_8d_3len", None, [], ["the name says task.list_len = 3, the tensors 2"]),
    ("L3_H1_D8_V100", lambda s: {**s, "blocks.1.attn.b_K": torch.ones(1, 8)}, [],
     ["the name says model.use_bias = false, the tensors true"]),
    ("L3_H1_D8_V100_ln", None, [], ["the name says model.ln = true, the tensors false"]),
    ("L3_H1_D8_V100", lambda s: {**s, "blocks.0.attn.W_V": torch.ones(1, 8, 8)}, [],
     ["the name says model.freeze_wv = true, the tensors false"]),
    ("L3_H2_D8_V100", None, [], ["the name says model.n_heads = 2, the tensors 1"]),
    ("mlp", lambda s: {**s, "blocks.0.mlp.W_in": torch.zeros(8, 32)}, [],
     ["unexpected tensor 'blocks.0.mlp.W_in'", "attention-only"]),
    ("L3_H1_D8_V100_mlp", None, [], ["MLP"]),
    ("heads", lambda s: {**s, "blocks.0.attn.W_Q": torch.zeros(2, 8, 8)}, [],
     ["d_head = d_model / n_heads"]),
    ("nothing", lambda s: {"a": torch.zeros(1)}, [], ["missing tensor 'embed.W_E'"]),
    ("text", lambda s: {**s, "embed.W_E": "weights"}, [], ["'embed.W_E' is a str, not a tensor"]),
    ("tiny", lambda s: {**s, "embed.W_E": torch.zeros(2, 8)}, [],
     ["a vocab of 2 holds no task (at least 2 digits and SEP)"]),
    ("empty", lambda s: {**s, "embed.W_E": torch.zeros(0, 8)}, ["task.n_digits=5"],
     ["a vocab of 0 holds no task"]),
])
def test_conflicts_are_one_line_naming_the_file(tmp_path, name, mutate, overrides, needles):
    path = save(tmp_path, name, line_config(), mutate)
    with pytest.raises(CheckpointError) as err:
        load(path, overrides)
    text = str(err.value)
    assert text.startswith(str(path)) and "\n" not in text, text
    for needle in needles:
        assert needle in text, text


@pytest.mark.parametrize("flags", ["bias", "wv", "wo", "bias_wv_wo"])
def test_zero_biases_and_identities_fit_a_name_that_says_biases_or_learned(tmp_path, flags):
    """An untrained model of the line's ``--bias`` / learned W_V or W_O holds zero biases and (as
    the line initialises them) identity W_V / W_O: the name says what those tensors cannot."""
    path = save(tmp_path, f"L3_H1_D8_V100_{flags}", line_config())  # zeros and identities
    _, got = load(path)
    assert got.model.use_bias == ("bias" in flags)
    assert (got.model.freeze_wv, got.model.freeze_wo) == ("wv" not in flags, "wo" not in flags)


def test_set_settles_a_name_conflict(tmp_path):
    path = save(tmp_path, "2layer_100dig_8d", line_config())
    _, got = load(path, ["model.n_layers=3"])
    assert got.model.n_layers == 3


def test_cli_conflict_and_ambiguity_exit_2_with_one_line(tmp_path):
    even = save(tmp_path, "L3_H1_D8_V100", line_config(),
                lambda s: {**s, "pos_embed.W_pos": torch.zeros(4, 8)})
    ambiguous = save(tmp_path, "weights", line_config("task.n_digits=20"))
    contradicted = save(tmp_path, "3layer_100dig_16d", line_config())
    cases = ((even, "4 positions"), (ambiguous, "--set task.n_digits=N"),
             (contradicted, "model.d_model = 16"))
    runs = [("eval",), ("info",), ("export", "--out", str(tmp_path / "o.pt"))]
    tried = [(command, path, needle) for command in runs for path, needle in cases]
    tried += [(("analyze", "--quiet"), ambiguous, cases[1][1]),
              (("report", "--quiet"), contradicted, cases[2][1])]
    for (command, *extra), path, needle in tried:
        result = run_cli(command, str(path), *extra)
        lines = result.stderr.strip().splitlines()
        assert result.returncode == 2 and len(lines) == 1, (command, result.stderr)
        assert path.name in lines[0] and needle in lines[0], lines[0]
    assert not (tmp_path / "o.pt").exists() and not (tmp_path / "3layer_100dig_16d.html").exists()


def test_export_of_an_inferred_model_loads_back_the_same(tmp_path):
    config = line_config("model.use_bias=true", "model.freeze_wv=false", "task.list_len=3")
    path = save(tmp_path, config.name, config,
                lambda s: {k: v + 0.1 if ".b_" in k else v for k, v in s.items()})
    out = tmp_path / "exported.pt"
    result = run_cli("export", str(path), "--out", str(out))
    assert result.returncode == 0, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1  # the notice
    model, got = load(out, ["task.n_digits=100"])
    assert got.model == config.model and got.task == config.task
    original, _ = load(path)
    tokens = torch.randint(0, config.task.vocab, (4, config.task.seq_len))
    assert torch.equal(model(tokens), original(tokens))


@pytest.mark.parametrize("sets,out,lost", [
    ([], "plain.pt", []),
    (["model.layer0_mask=true"], "plain.pt", ["model.layer0_mask=true"]),
    (["model.layer0_mask=true"], "3layer_100dig_8d_l0mask.pt", []),
])
def test_export_says_what_its_name_loses_and_how_to_load_it_back(tmp_path, sets, out, lost):
    """A .pt holds tensors only: a setting they do not show (the layer-0 mask here) survives only
    in the file's name. export says so in one line, with the --set and the name that keep it;
    loaded back that way, the export evaluates as the original did."""
    target = tmp_path / out
    seed = str(FIXTURES / "3layer_100dig_8d.pt")
    result = run_cli("export", seed, "--out", str(target), *[f"--set={s}" for s in sets])
    assert result.returncode == 0, result.stderr
    notices = [line for line in result.stderr.splitlines() if "holds tensors only" in line]
    assert len(notices) == bool(lost)
    for s in lost:
        assert f"--set {s}" in notices[0] and "3layer_100dig_8d_l0mask.pt" in notices[0]
    _, want = load(FIXTURES / "3layer_100dig_8d.pt", sets)
    _, got = load(target, lost)
    assert got.task == want.task and got.model == want.model


def test_export_of_a_ten_digit_model_names_the_digits(tmp_path):
    config = Config().override(["task.n_digits=10", "model.d_model=16"])
    path = save(tmp_path, config.name, config)
    result = run_cli("export", str(path), "--out", str(tmp_path / "x.pt"))
    assert result.returncode == 0, result.stderr
    assert "--set task.n_digits=10" in result.stderr and f"{config.name}.pt" in result.stderr
    _, got = load(tmp_path / "x.pt", ["task.n_digits=10"])
    assert got.task == config.task and got.model == config.model


def test_export_under_a_name_that_contradicts_the_tensors_is_refused(tmp_path):
    """A file that would not load back under its name is not written (exit 2, one line naming
    the name to use), and a file already there is left as it was."""
    seed = str(FIXTURES / "3layer_100dig_8d.pt")
    out = tmp_path / "2layer_100dig_8d.pt"
    result = run_cli("export", seed, "--out", str(out))
    assert result.returncode == 2 and "Traceback" not in result.stderr and not out.exists()
    error = result.stderr.strip().splitlines()[-1]  # after the notice of what was loaded
    assert "the name says 2 layers" in error and "name it 3layer_100dig_8d.pt" in error
    out.write_bytes(b"a finished model")
    assert run_cli("export", seed, "--out", str(out)).returncode == 2
    assert out.read_bytes() == b"a finished model" and sorted(tmp_path.iterdir()) == [out]


def test_export_to_safetensors_writes_safetensors_that_load_back(tmp_path):
    """``--out X.safetensors``: the same tensors in safetensors' format (not a torch zip under
    that name), loaded back by safetensors itself and by listcopy's eval."""
    from safetensors.torch import load_file

    seed = str(FIXTURES / "3layer_100dig_8d.pt")
    out, plain = tmp_path / "3layer_100dig_8d.safetensors", tmp_path / "3layer_100dig_8d.pt"
    for path in (out, plain):
        result = run_cli("export", seed, "--out", str(path))
        assert result.returncode == 0, result.stderr
    want, got = torch.load(plain, weights_only=True), load_file(str(out))
    assert sorted(got) == sorted(want) and all(torch.equal(got[k], want[k]) for k in want)
    evals = [run_cli("eval", str(path), "--json") for path in (out, seed)]
    assert all(r.returncode == 0 for r in evals) and evals[0].stdout == evals[1].stdout


def test_a_safetensors_export_carries_its_config_and_loads_back_under_any_name(tmp_path):
    """A sort model with MASK and no layer-0 mask (what neither a plain name nor the tensors say):
    its safetensors export, named anything, evaluates as the run does; the header's config is
    checked against the tensors like a run's, and --set still applies."""
    from listcopy.checkpoint import save_tensors
    from listcopy.training import train

    config = Config().replace(task={"n_digits": 6, "kind": "sort", "mask_token": True},
                              model={"d_model": 12, "n_heads": 2, "n_layers": 2},
                              train={"max_steps": 200, "device": "cpu"})
    train(config, tmp_path / "run", progress=False)
    out = tmp_path / "weights.safetensors"
    result = run_cli("export", str(tmp_path / "run"), "--out", str(out))
    assert result.returncode == 0 and "holds tensors only" not in result.stderr, result.stderr
    _, got = load(out)
    assert got.task == config.task and got.model == config.model
    evals = [run_cli("eval", str(p), "--json") for p in (out, tmp_path / "run")]
    assert all(r.returncode == 0 for r in evals) and evals[0].stdout == evals[1].stdout
    assert "the config its header carries" in evals[0].stderr
    _, lr_set = load(out, ["train.lr=0.5"])
    assert lr_set.train.lr == 0.5 and lr_set.model == config.model
    with pytest.raises(CheckpointError, match="'embed.W_E' has shape .*expected"):
        load(out, ["model.d_model=16"])
    state, _ = load(tmp_path / "run", hooks=False)[0].state_dict(), None
    save_tensors(tmp_path / "bad.safetensors", state, meta={"config": {"task": {"colour": 1}}})
    with pytest.raises(CheckpointError, match=r"bad.safetensors: the config in its header: "
                                              r".*colour"):
        load(tmp_path / "bad.safetensors")


def test_a_runs_model_file_loads_with_the_runs_config(tmp_path):
    """`runs/x/model.safetensors` given as a file is the run (its run.json says what the tensors
    cannot: here 10 digits, which the vocab alone leaves open)."""
    from listcopy.training import train

    config = Config().replace(task={"n_digits": 10}, model={"d_model": 8, "n_layers": 2},
                              train={"max_steps": 100, "device": "cpu"})
    train(config, tmp_path / "run", progress=False)
    said = []
    _, got = load(tmp_path / "run" / "model.safetensors", notice=said.append)
    assert got == load(tmp_path / "run")[1] and "a run's weights" in said[0]


def test_a_name_that_says_nothing_says_the_task_kind_was_assumed(tmp_path):
    config = Config().override(["model.d_model=16"])
    path = save(tmp_path, "weights", config)
    said = []
    _, got = load(path, notice=said.append)
    assert got.task.kind == "copy" and "task.kind copy (the name says nothing" in said[0]
    said.clear()
    load(save(tmp_path, config.name, config), notice=said.append)
    assert "task.kind" not in said[0]
