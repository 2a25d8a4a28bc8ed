import pytest

from listcopy.config import (MAX_SEEDS, Config, ConfigError, check_ensemble, ensemble_key,
                             load_config, model_name, parse_model_name, parse_overrides,
                             parse_seeds)


def test_defaults_are_the_seeds():
    c = Config()
    assert (c.task.n_digits, c.task.list_len, c.task.train_frac, c.task.split_seed) == (100, 2, 0.8, 0)
    assert (c.model.n_layers, c.model.n_heads, c.model.d_model) == (3, 1, 8)
    assert (c.model.ln, c.model.use_bias, c.model.freeze_wv, c.model.freeze_wo) == (False, False, True, True)
    t = c.train
    assert (t.lr, t.weight_decay, t.batch_size, t.max_steps) == (1e-3, 0.01, 128, 300_000)
    assert (t.eval_every, t.early_stop_acc, t.checkpoint_every, t.seed, t.device) == (
        100, 0.999, 50_000, 0, "auto")
    assert (c.task.seq_len, c.task.sep, c.task.vocab, c.task.n_train, c.task.n_val) == (
        5, 100, 101, 8000, 2000)
    assert c.model.d_head == 8


@pytest.mark.parametrize("override, key", [
    ("model.d_model=10", "model.d_model"),  # with n_heads=3 below
    ("task.n_digits=1", "task.n_digits"),
    ("task.list_len=0", "task.list_len"),
    ("train.lr=0", "train.lr"),
    ("train.lr=-1e-3", "train.lr"),
    ("task.train_frac=1.0", "task.train_frac"),
    ("task.train_frac=0", "task.train_frac"),
    ("train.early_stop_acc=0", "train.early_stop_acc"),
    ("train.early_stop_acc=1.5", "train.early_stop_acc"),
    ("train.batch_size=0", "train.batch_size"),
    ("train.max_steps=0", "train.max_steps"),
    ("train.device=tpu", "train.device"),
    ("model.ln=1", "model.ln"),
    ("model.n_layers=2.5", "model.n_layers"),
    ("train.weight_decay=-1", "train.weight_decay"),
])
def test_out_of_range_values_are_refused_naming_the_key(override, key):
    extra = ["model.n_heads=3"] if key == "model.d_model" else []
    with pytest.raises(ConfigError) as err:
        Config().override([*extra, override])
    assert key in str(err.value)
    assert "\n" not in str(err.value)


def test_unknown_keys_and_sections_are_refused():
    with pytest.raises(ConfigError, match="model.dmodel"):
        Config().override(["model.dmodel=8"])
    with pytest.raises(ConfigError, match="'optim'"):
        Config.from_dict({"optim": {"lr": 1}})
    with pytest.raises(ConfigError, match="section.key=value"):
        Config().override(["lr=1"])


def test_override_values_parse_as_toml():
    c = Config().override(["model.ln=true", "train.lr=3e-4", "train.device=cpu",
                           'train.device="cpu"', "model.d_model=16"])
    assert c.model.ln is True and c.train.lr == 3e-4 and c.train.device == "cpu"
    assert c.model.d_model == 16
    assert parse_overrides(["task.n_digits=10"]) == {"task": {"n_digits": 10}}


def test_toml_file_then_overrides(tmp_path):
    f = tmp_path / "c.toml"
    f.write_text("[model]\nd_model = 16\nn_layers = 2\n[train]\nlr = 0.01\n")
    c = load_config(f, ["model.n_layers=4"])
    assert (c.model.d_model, c.model.n_layers, c.train.lr) == (16, 4, 0.01)
    f.write_text("[model\n")
    with pytest.raises(ConfigError, match="invalid TOML"):
        load_config(f)
    f.write_text("[model]\nwidth = 3\n")
    with pytest.raises(ConfigError, match=r"c\.toml.*model\.width"):
        load_config(f)
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "missing.toml")


def test_dict_round_trip_and_frozen():
    c = Config().override(["model.d_model=32", "task.list_len=3", "train.seed=7"])
    assert Config.from_dict(c.to_dict()) == c
    with pytest.raises(Exception):
        c.model.d_model = 4  # frozen


def test_model_name_both_ways():
    c = Config()
    assert model_name(c) == "3layer_100dig_8d" == c.name
    c2 = Config.from_dict(parse_model_name("2layer_50dig_128d"))
    assert (c2.model.n_layers, c2.task.n_digits, c2.model.d_model) == (2, 50, 128)
    assert Config.from_dict(parse_model_name(c.name)) == c
    with pytest.raises(ConfigError):
        parse_model_name("my_model")


def test_batch_size_is_clamped_to_the_training_set_as_the_seed_does():
    c = Config().override(["task.n_digits=4", "task.list_len=1", "task.train_frac=0.75"])
    assert c.task.n_train == 3 and c.batch_size == 3  # min(128, len(train_ds))
    assert Config().batch_size == 128


def test_seeds_are_at_most_64_bit():
    assert Config().override([f"train.seed={2**63 - 1}"]).train.seed == 2**63 - 1
    for key in ("train.seed", "task.split_seed"):
        with pytest.raises(ConfigError, match=f"{key} = {2**63}: must be at most 2\\*\\*63 - 1"):
            Config().override([f"{key}={2**63}"])
        with pytest.raises(ConfigError, match=f"{key} = -1: must be an integer >= 0"):
            Config().override([f"{key}=-1"])


# ---- the dotted-key view ----------------------------------------------------------------------

def test_flat_lists_every_setting_under_its_dotted_key():
    c = Config().override(["model.d_model=16", "train.lr=0.01"])
    flat = c.flat()
    by_hand = {f"{section}.{key}": value for section, table in c.to_dict().items()
               for key, value in table.items()}
    assert flat == by_hand and list(flat) == list(by_hand)  # section, then field order
    assert flat["model.d_model"] == 16 and flat["train.lr"] == 0.01 and len(flat) == 33
    assert Config.from_flat(flat) == c


def test_from_flat_keeps_the_base_and_validates():
    base = Config().override(["task.n_digits=10"])
    c = Config.from_flat({"model.n_layers": 2, "train.seed": 4}, base=base)
    assert (c.task.n_digits, c.model.n_layers, c.train.seed) == (10, 2, 4)
    with pytest.raises(ConfigError, match="model.d_model"):
        Config.from_flat({"model.d_model": 0})
    with pytest.raises(ConfigError, match="unknown config key model.width"):
        Config.from_flat({"model.width": 3})
    with pytest.raises(ConfigError, match="'d_model' must look like section.key"):
        Config.from_flat({"d_model": 3})


# ---- what one ensemble shares -----------------------------------------------------------------

def test_members_may_differ_in_seed_lr_weight_decay_threshold_and_steps():
    a = Config()
    b = a.override(["train.seed=3", "train.lr=0.01", "train.weight_decay=0", "train.max_steps=5",
                    "train.early_stop_acc=0.5"])
    assert ensemble_key(a) == ensemble_key(b)
    check_ensemble([a, b])


@pytest.mark.parametrize("override", ["task.n_digits=10", "task.split_seed=1", "model.d_model=16",
                                      "model.ln=true", "train.batch_size=64",
                                      "train.eval_every=50", "train.checkpoint_every=10",
                                      "train.device=cpu", "train.reshuffle=true"])
def test_members_must_share_task_model_and_the_shared_train_keys(override):
    a, b = Config(), Config().override([override])
    assert ensemble_key(a) != ensemble_key(b)
    key = override.split("=")[0]
    with pytest.raises(ConfigError, match=f"ensemble members must share {key} "):
        check_ensemble([a, a, b])


# ---- seed ranges ------------------------------------------------------------------------------

@pytest.mark.parametrize("raw, seeds", [
    ("0-3", (0, 1, 2, 3)), ("0,3,7", (0, 3, 7)), ("0-2,8", (0, 1, 2, 8)), ("7", (7,)),
    ("3,0", (3, 0)),                                     # the order given
    ("5-5", (5,)), (" 1 - 2 , 4 ", (1, 2, 4)),           # spaces around numbers and dashes
    (f"0-{MAX_SEEDS - 1}", tuple(range(MAX_SEEDS))),     # exactly the limit
    (4, (4,)), ([5, 2], (5, 2)), ((0, 1), (0, 1)),        # a grid file's integer or array
])
def test_seed_ranges(raw, seeds):
    assert parse_seeds(raw) == seeds


@pytest.mark.parametrize("raw, problem", [
    ("5-2", "range 5-2 is empty"), ("a-b", "use a range"), ("", "use a range"),
    ("0,", "use a range"), (",1", "use a range"), ("-1", "use a range"), ("1-", "use a range"),
    ("1-2-3", "use a range"), ("0x10", "use a range"), ("1.5", "use a range"),
    ("\u0663", "use a range"),                            # a non-ASCII digit
    ("0-3,2", "seed 2 repeated"), ("1,1", "seed 1 repeated"), ([1, 1], "seed 1 repeated"),
    (f"0-{MAX_SEEDS}", "at most 100,000 seeds"),
    ("0-99999,100000-100001", "at most 100,000 seeds"),  # the limit is on the total
    ("0-99999999999999999999", "at most 100,000 seeds"),  # refused before expanding
    ([], "no seeds"), ([-1], "-1 is not an integer >= 0"), ([1.5], "1.5 is not an integer"),
    ([True], "True is not an integer"), (True, "must be a range"), (1.0, "must be a range"),
])
def test_bad_seed_ranges_are_one_line_errors_naming_the_option(raw, problem):
    with pytest.raises(ConfigError) as err:
        parse_seeds(raw, "--seeds")
    message = str(err.value)
    assert message.startswith(f"--seeds {raw!r}: ") and problem in message, message
    assert "\n" not in message


def test_the_readme_table_names_every_setting_with_its_default():
    """README's settings table: one row per section, every key of it with its default as written
    there (TOML's spelling: true / false, quoted strings)."""
    import dataclasses
    import re
    from pathlib import Path

    text = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    for section in dataclasses.fields(Config):
        row = re.search(rf"^\| `{section.name}` \|(.*)\|$", text, re.M)
        assert row, section.name
        for field in dataclasses.fields(getattr(Config(), section.name)):
            value = getattr(getattr(Config(), section.name), field.name)
            shown = (str(value).lower() if isinstance(value, bool)
                     else f'"{value}"' if isinstance(value, str) else None)
            entry = re.search(rf"`{field.name}` ([^,;\s]+)", row.group(1))
            assert entry, f"{section.name}.{field.name} missing from the README's table"
            if shown is not None:
                assert entry.group(1) == shown, (field.name, entry.group(1), shown)
            else:
                assert float(entry.group(1)) == value, (field.name, entry.group(1), value)
