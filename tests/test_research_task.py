"""The research line's task against its own get_dataset (fixtures made by running it,
tests/fixtures/research/data.*): the MASK token, the split with and without the dupes options,
the generator's draws, the masks; and the new keys' validation."""

import hashlib
import json

import pytest
import torch

from listcopy.config import Config, ConfigError, TaskConfig
from listcopy.task import (all_lists, attention_mask, dataset, layer0_attention_mask, model_masks,
                           seed_generator)
from tests.conftest import FIXTURES

CASES = {"l2_d100_s0": (2, 100, 0), "l3_d10_s1": (3, 10, 1)}
OPTIONS = {"default": [], "no_dupes": ["task.no_dupes=true"],
           "train_dupes_only": ["task.train_dupes_only=true"]}
NEG = float("-inf")


@pytest.fixture(scope="module")
def data_fx():
    from safetensors.torch import load_file

    d = FIXTURES / "research"
    return load_file(d / "data.safetensors"), json.loads((d / "data.json").read_text())


def research_task(case, option) -> Config:
    L, n, seed = CASES[case]
    return Config().override([f"task.list_len={L}", f"task.n_digits={n}", f"task.split_seed={seed}",
                              "task.mask_token=true", *OPTIONS[option]])


def sha(t):
    return hashlib.sha256(t.to(torch.int64).contiguous().numpy().tobytes()).hexdigest()


@pytest.mark.parametrize("option", OPTIONS)
@pytest.mark.parametrize("case", CASES)
def test_split_inputs_and_targets_are_get_datasets(data_fx, case, option):
    tensors, meta = data_fx
    key = f"{case}.{option}"
    config = research_task(case, option)
    data = dataset(config)
    info = meta["cases"][key]
    assert (config.task.n_train, config.task.n_val) == (info["n_train"], info["n_val"])
    lists = all_lists(config.task)
    L = config.task.list_len
    for part in ("train", "val"):
        rows = tensors[f"{key}.{part}_rows"].long()
        assert torch.equal(getattr(data, f"{part}_targets")[:, :L], lists[rows]), part
    for name, digest in info["sha256_int64"].items():  # the whole tensors, as get_dataset gave them
        assert sha(getattr(data, name)) == digest, name
    if case == "l3_d10_s1":  # stored whole
        for name in ("train_inputs", "train_targets", "val_inputs", "val_targets"):
            assert torch.equal(getattr(data, name), tensors[f"{key}.{name}"].long()), name


def test_inputs_hold_mask_and_targets_sep_by_hand():
    data = dataset(research_task("l2_d100_s0", "default"))
    assert data.train_inputs[0].tolist() == [60, 44, 101, 100, 100]  # the fixture's first row
    assert data.train_targets[0].tolist() == [60, 44, 101, 60, 44]
    t = TaskConfig(mask_token=True)
    assert (t.vocab, t.sep, t.mask_id, t.fill) == (102, 101, 100, 100)
    s = TaskConfig()
    assert (s.vocab, s.sep, s.mask_id, s.fill) == (101, 100, None, 100)


def test_dupes_options_by_hand():
    """n_digits 4, lists of 2: 4 dupes [i, i]; no_dupes holds the 12 others, split 9 / 3;
    train_dupes_only trains on those 9 and the 4 dupes and validates on the same 3."""
    base = ["task.n_digits=4", "task.train_frac=0.8", "task.mask_token=true"]
    plain = dataset(Config().override(base))
    nd = dataset(Config().override([*base, "task.no_dupes=true"]))
    td = dataset(Config().override([*base, "task.train_dupes_only=true"]))
    dupe = lambda t: t[:, 0] == t[:, 1]  # noqa: E731
    assert (plain.train_inputs.shape[0], plain.val_inputs.shape[0]) == (12, 4)
    assert (nd.train_inputs.shape[0], nd.val_inputs.shape[0]) == (9, 3)
    assert (td.train_inputs.shape[0], td.val_inputs.shape[0]) == (13, 3)
    assert not dupe(nd.inputs).any() and not dupe(td.val_inputs).any()
    assert dupe(td.train_inputs).sum() == 4
    assert torch.equal(nd.val_inputs, td.val_inputs)  # same randperm over the non-dupes
    assert {tuple(r) for r in td.train_inputs.tolist()} == (
        {tuple(r) for r in nd.train_inputs.tolist()} | {(i, i, 5, 4, 4) for i in range(4)})


@pytest.mark.parametrize("option", OPTIONS)
def test_seed_generator_replays_get_datasets_draws(data_fx, option):
    """After the split the line's global generator has drawn randperm(n) (twice with
    train_dupes_only: the second over the training part); model init draws come next."""
    tensors, _ = data_fx
    key = f"l3_d10_s1.{option}"
    config = research_task("l3_d10_s1", option)
    g = torch.Generator().manual_seed(1)
    assert torch.equal(torch.randperm(tensors[f"{key}.perm"].shape[0], generator=g),
                       tensors[f"{key}.perm"].long())
    if option == "train_dupes_only":
        assert torch.equal(torch.randperm(config.task.n_train, generator=g),
                           tensors[f"{key}.perm_train"].long())
    mine = seed_generator(config.task, 1)
    assert torch.equal(torch.randn(8, generator=mine), torch.randn(8, generator=g))


@pytest.mark.parametrize("L", [2, 3])
def test_masks_are_the_lines(data_fx, L):
    tensors, meta = data_fx
    assert torch.equal(attention_mask(L), tensors[f"mask_bias_len{L}"][0, 0])
    assert torch.equal(layer0_attention_mask(L), tensors[f"mask_bias_l0_len{L}"][0, 0])
    masks = model_masks(Config().override([f"task.list_len={L}", "model.layer0_mask=true"]))
    T = 2 * L + 1
    assert masks[0].silent.tolist() == [False] * (L + 1) + [True] * L
    assert not masks[1].silent.any() and not masks[2].silent.any()
    allowed0 = torch.tensor(meta["masks"][f"len{L}"]["allowed_layer_0"], dtype=torch.bool)
    assert torch.equal(masks[0].allowed, allowed0 & ~masks[0].silent[:, None])  # rows silenced
    assert torch.equal(masks[1].allowed,
                       torch.tensor(meta["masks"][f"len{L}"]["allowed_layers_1plus"], dtype=torch.bool))
    assert masks[0].allowed[L + 1:].sum() == 0 and masks[0].scores.shape == (T, T)


def test_layer0_mask_by_hand():
    expected = torch.tensor([
        [0, NEG, NEG, NEG, NEG],
        [0, NEG, NEG, NEG, NEG],
        [0, 0, NEG, NEG, NEG],
        [NEG, NEG, NEG, 0, NEG],
        [NEG, NEG, NEG, NEG, 0],
    ])
    assert torch.equal(layer0_attention_mask(2), expected)
    seed = model_masks(Config())
    assert all(torch.equal(m.scores, attention_mask(2)) and not m.silent.any() for m in seed)


@pytest.mark.parametrize("overrides, key, why", [
    (["task.no_dupes=true", "task.train_dupes_only=true"], "task.train_dupes_only", "one or the other"),
    (["task.no_dupes=true", "task.list_len=1", "task.n_digits=10"], "task.no_dupes", "lists of one digit"),
    (["task.train_dupes_only=true", "task.n_digits=2000"], "task.train_dupes_only", "sampled"),
    (["task.mask_token=1"], "task.mask_token", "true or false"),
    (["model.layer0_mask=yes"], "model.layer0_mask", "true or false"),
])
def test_new_keys_are_validated_in_one_line(overrides, key, why):
    with pytest.raises(ConfigError) as err:
        Config().override(overrides)
    assert key in str(err.value) and why in str(err.value) and "\n" not in str(err.value)


def test_new_keys_in_toml_and_run_json_round_trip(tmp_path):
    f = tmp_path / "r.toml"
    f.write_text("[task]\nmask_token = true\nno_dupes = true\n[model]\nlayer0_mask = true\n")
    from listcopy.config import load_config

    c = load_config(f)
    assert c.task.mask_token and c.task.no_dupes and c.model.layer0_mask
    assert Config.from_dict(json.loads(json.dumps(c.to_dict()))) == c
    assert c.flat()["task.train_dupes_only"] is False
