"""Model names both ways: the seed's format, the research line's L-format, the paper's names, and
the round trip for every variant."""

import itertools

import pytest

from listcopy.config import Config, ConfigError, model_name, parse_model_name


def research(*extra):
    return Config().override(["task.mask_token=true", "model.layer0_mask=true", *extra])


def test_the_lines_variant_is_named_as_its_train_py_names_it():
    """train.py: L{layers}_H{heads}_D{d_model}_V{n_digits}, then len{L} (if not 2), ln, bias, wv,
    wo joined by '-' (written out by hand from train.py's rules)."""
    assert research("model.n_layers=2", "model.d_model=64").name == "L2_H1_D64_V100"
    c = research("task.list_len=3", "model.ln=true", "model.use_bias=true",
                 "model.freeze_wv=false", "model.freeze_wo=false", "model.n_heads=2")
    assert c.name == "L3_H2_D8_V100_len3-ln-bias-wv-wo"
    assert research("model.freeze_wo=false").name == "L3_H1_D8_V100_wo"


def test_mixed_variants_and_dupes_options_get_seed_style_suffixes():
    assert Config().override(["task.mask_token=true"]).name == "3layer_100dig_8d_mask"
    assert Config().override(["model.layer0_mask=true"]).name == "3layer_100dig_8d_l0mask"
    assert Config().override(["task.no_dupes=true"]).name == "3layer_100dig_8d_nodupes"
    assert research("task.train_dupes_only=true").name == "L3_H1_D8_V100_traindupes"
    assert Config().name == "3layer_100dig_8d"


KEYS = {"task.mask_token": [False, True], "model.layer0_mask": [False, True],
        "task.kind": ["copy", "sort"], "task.list_len": [2, 3], "model.ln": [False, True],
        "model.use_bias": [False, True], "model.freeze_wv": [True, False],
        "model.freeze_wo": [True, False], "task.dupes": ["", "no_dupes", "train_dupes_only"]}


def test_names_round_trip_for_every_variant():
    """parse_model_name(model_name(c)) gives back c's task and model keys, for every combination
    of the keys a name carries (the seed's format does not carry heads or the weight flags: those
    stay at their defaults there)."""
    names = set()
    for values in itertools.product(*KEYS.values()):
        settings = dict(zip(KEYS, values))
        dupes = settings.pop("task.dupes")
        if dupes:
            settings[f"task.{dupes}"] = True
        c = Config.from_flat({**settings, "model.n_layers": 2, "model.d_model": 16,
                              "task.n_digits": 20})
        if not (c.task.mask_token and c.model.layer0_mask):
            c = c.replace(model={"ln": False, "use_bias": False, "freeze_wv": True,
                                 "freeze_wo": True})
        back = Config.from_dict(parse_model_name(model_name(c)))
        assert back.task == c.task and back.model == c.model, model_name(c)
        names.add(model_name(c))
    # one name per distinct config: the line's 2 kinds x 2 lengths x 16 flag sets x 3 dupes
    # options, and the seed's format's 3 switch settings x 2 x 2 x 3
    assert len(names) == 2 * 2 * 16 * 3 + 3 * 2 * 2 * 3


def test_the_lines_checkpoint_names_parse():
    """The shared checkpoints' names (their parse results by the line's own parsers are in
    tests/fixtures/research/checkpoints.json; list-comp's parser reads V as digits, as here)."""
    got = parse_model_name("L3_H1_D64_V100_len3_260121-143443_acc0.9962")
    assert got["task"] == {"n_digits": 100, "list_len": 3, "mask_token": True}
    assert got["model"] == {"n_layers": 3, "d_model": 64, "n_heads": 1, "ln": False,
                            "use_bias": False, "freeze_wv": True, "freeze_wo": True,
                            "layer0_mask": True}
    paper = parse_model_name("3layer_100dig_64d")  # the variant and the length: the tensors'
    assert paper == {"task": {"n_digits": 100}, "model": {"n_layers": 3, "d_model": 64}}
    assert parse_model_name("2layer_100dig_64d_20241014-153012") == {
        "task": {"n_digits": 100}, "model": {"n_layers": 2, "d_model": 64}}
    assert "list_len" not in parse_model_name("L2_H1_D64_V100_ln")["task"]
    assert parse_model_name("2layer_10dig_16d_4len")["task"]["list_len"] == 4


def test_flags_as_separate_parts_and_anything_after_them():
    a = parse_model_name("L2_H1_D64_V100_len3_ln-bias_stamp_acc0.5")
    b = parse_model_name("L2_H1_D64_V100_len3-ln-bias")
    assert a == b and a["task"]["list_len"] == 3 and a["model"]["ln"] and a["model"]["use_bias"]
    # a part that is not all flags ends them: "ln" after it is not read
    c = parse_model_name("L2_H1_D64_V100_260121-143443_ln")
    assert c["model"]["ln"] is False


def test_names_that_are_not_models_or_have_an_mlp_are_refused():
    for bad in ("my_model", "L2_H1_D64", "3layer_100dig", "L2_H1_D64_V100x"):
        with pytest.raises(ConfigError, match="not a model name"):
            parse_model_name(bad)
    with pytest.raises(ConfigError, match="MLP"):
        parse_model_name("L2_H1_D64_V100_ln-mlp_260121")
