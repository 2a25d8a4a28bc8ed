import pytest

from listcopy.config import (Config, ConfigError, load_config, model_name, parse_model_name,
                             parse_overrides)


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
