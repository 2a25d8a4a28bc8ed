"""Grid files: expansion (specs x axes x seeds), identical configs trained once, grouping by shape,
and one-line errors (exit 2) for malformed files."""

from __future__ import annotations

from pathlib import Path

import pytest

from listcopy import cli
from listcopy.config import Config, parse_seeds
from listcopy.sweep.grid import (SHARED_TRAIN_KEYS, GridError, config_hash, group_runs, load_grid,
                                 parse_grid, unique_runs)

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def test_shared_keys_match_the_trainer():
    from listcopy.training import SHARED_TRAIN_KEYS as trainer_keys

    assert SHARED_TRAIN_KEYS == tuple(trainer_keys)


def test_specs_x_axes_x_seeds(grid_file):
    grid = load_grid(grid_file("""
        seeds = "0-2"
        [[specs]]
        name = "a"
        "model.d_model" = 16
        [[specs]]
        name = "b"
        model.n_layers = 2          # a dotted key works as well as a quoted one
        [axes]
        "train.lr" = [1e-3, 3e-4]
        "model.ln" = [false, true]
    """))
    points = grid.points()
    assert len(points) == 2 * 4 * 3
    assert [p.name for p in points[:3]] == ["a,lr=0.001,ln=false"] * 3
    assert [p.seed for p in points[:4]] == [0, 1, 2, 0]  # seeds vary fastest
    first = points[0].config
    assert (first.task.n_digits, first.model.d_model, first.model.n_layers) == (10, 16, 3)
    b = [p for p in points if p.name == "b,lr=0.0003,ln=true" and p.seed == 2]
    assert len(b) == 1
    c = b[0].config
    assert (c.model.d_model, c.model.n_layers, c.train.lr, c.model.ln, c.train.seed) == (
        8, 2, 3e-4, True, 2)
    assert dict(b[0].settings) == {"model.n_layers": 2, "train.lr": 3e-4, "model.ln": True}
    assert len({p.key for p in points}) == len(points)


def test_no_specs_no_axes_is_the_base_config_per_seed(grid_file):
    grid = load_grid(grid_file("seeds = [3, 1]\n"))
    points = grid.points()
    assert [p.name for p in points] == ["3layer_10dig_8d"] * 2
    assert [p.seed for p in points] == [3, 1]


def test_base_table_form(grid_file):
    grid = load_grid(grid_file("""
        [base.model]
        d_model = 32
        [base.train]
        max_steps = 7
    """, base=""))
    c = grid.points()[0].config
    assert (c.model.d_model, c.train.max_steps, c.task.n_digits) == (32, 7, 100)


def test_the_notebook_grid_trains_its_duplicate_once():
    grid = load_grid(EXAMPLES / "seed_grid.toml")
    points = grid.points()
    assert [p.name for p in points] == ["d128", "d128_2layer", "d128_2layer", "d128_3layer"]
    for p in points:
        assert p.config.model.d_model == 128 and p.config.train.max_steps == 20_000
    runs = unique_runs(points)
    assert len(runs) == 3
    assert runs[0].names == ("d128", "d128_3layer")
    assert points[0].key == points[3].key != points[1].key != points[2].key
    ln = runs[2].config.model
    flags = (ln.n_layers, ln.ln, ln.use_bias, ln.freeze_wv, ln.freeze_wo)
    assert flags == (2, True, True, True, True)
    assert len(group_runs(runs, n_workers=2)) == 3  # three shapes


def test_config_hash_is_canonical():
    a = Config().override(["model.d_model=16", "train.lr=0.01"])
    b = Config().override(["train.lr=0.01", "model.d_model=16"])
    assert config_hash(a) == config_hash(b) != config_hash(Config())


def test_grouping_by_shape(grid_file):
    grid = load_grid(grid_file("""
        seeds = "0-3"
        [axes]
        "train.lr" = [1e-3, 1e-2]               # may differ within a group
        "train.max_steps" = [100, 200]          # so may this
        "model.d_model" = [4, 8]                # this may not
    """))
    runs = grid.runs()
    assert len(runs) == 32
    groups = group_runs(runs, n_workers=1)
    assert len(groups) == 2
    for g in groups:
        assert len(g) == 16 and len({r.config.model.d_model for r in g}) == 1
    # more workers than shapes: the big groups are split so that every worker has work
    groups = group_runs(runs, n_workers=4)
    assert sorted(len(g) for g in groups) == [8, 8, 8, 8]
    assert sorted(r.key for g in groups for r in g) == sorted(r.key for r in runs)
    assert max(len(g) for g in group_runs(runs, n_workers=1, max_members=5)) <= 5
    # the costliest shape comes first
    assert groups[0][0].config.model.d_model == 8


@pytest.mark.parametrize("key, value", [
    ("train.batch_size", "[16, 32]"),
    ("train.eval_every", "[50, 100]"),
    ("train.reshuffle", "[false, true]"),
    ("model.n_layers", "[1, 2]"),
    ("task.split_seed", "[0, 1]"),
])
def test_shared_settings_split_groups(grid_file, key, value):
    runs = load_grid(grid_file(f'[axes]\n"{key}" = {value}\n')).runs()
    assert len(group_runs(runs, n_workers=1)) == 2


@pytest.mark.parametrize("raw, seeds", [
    ("0-3", (0, 1, 2, 3)), ("0,3,7", (0, 3, 7)), ("0-2,8", (0, 1, 2, 8)), ([5, 2], (5, 2)),
    (4, (4,)), (" 1 - 2 ", (1, 2)),
])
def test_seeds(raw, seeds):
    assert parse_seeds(raw) == seeds


BAD_GRIDS = [
    ("[model\nd_model = 8", "invalid TOML"),
    ("colour = 1", "unknown key 'colour'"),
    ("[axes]\n'model.d_model' = [8]\nseeds = [1]", "before the first"),
    ("[model]\nwidth = 3", "model.width"),
    ("[[specs]]\nname = 'x'\n'model.width' = 3", "model.width"),
    ("[[specs]]\nname = 'x'\nd_model = 3", "section.key"),
    ("[[specs]]\nname = 'x'\n'modle.d_model' = 3", "modle"),
    ("[[specs]]\nname = 'x'\n'model.d_model' = 0", "model.d_model"),
    ("[[specs]]\nname = 'x'\n'model.n_heads' = 3", "model.d_model"),
    ("[[specs]]\nname = ''", "name"),
    ("specs = 3", "specs"),
    ("[axes]\n'model.d_model' = []", "empty"),
    ("[axes]\n'model.d_model' = 8", "list"),
    ("[axes]\n'model.d_model' = [8, 8]", "repeated"),
    ("[axes]\n'model.d_model' = [8, 0]", "model.d_model = 0"),
    ("[axes]\n'model.ln' = [true, 'maybe']", "model.ln"),
    ("[axes]\n'train.seed' = [1, 2]", "seeds"),
    ("seeds = 'a-b'", "seeds"),
    ("seeds = '5-2'", "empty"),
    ("seeds = []", "no seeds"),
    ("seeds = [-1]", "seeds"),
    ("seeds = [1, 1]", "repeated"),
    ("seeds = [1.5]", "seeds"),
    ("seeds = true", "seeds"),
    ("seeds = '0-9999999'", "at most"),
    ("[base.model]\nd_model = 8\n[model]\nn_layers = 1", "not both"),
]


@pytest.mark.parametrize("body, needle", BAD_GRIDS)
def test_malformed_grids_are_one_line_errors(grid_file, body, needle):
    path = grid_file(body)
    with pytest.raises(GridError) as info:
        load_grid(path)
    message = str(info.value)
    assert "\n" not in message and needle in message, message
    assert str(path) in message


def test_missing_grid_file(tmp_path):
    with pytest.raises(GridError, match="not found"):
        load_grid(tmp_path / "nope.toml")


@pytest.mark.parametrize("text", ["", "\n# nothing yet\n"])
def test_an_empty_grid_file_is_refused(tmp_path, text):
    """Not the default config's one run of 300,000 steps: an empty file is a mistake."""
    path = tmp_path / "grid.toml"
    path.write_text(text)
    with pytest.raises(GridError, match="empty") as info:
        load_grid(path)
    assert "\n" not in str(info.value) and str(path) in str(info.value)


@pytest.mark.parametrize("body, needle", BAD_GRIDS[:3] + BAD_GRIDS[10:11] + BAD_GRIDS[16:17])
def test_malformed_grid_exits_2_with_one_line(grid_file, tmp_path, capsys, body, needle):
    code = cli.main(["sweep", str(grid_file(body)), "--out", str(tmp_path / "s"),
                           "--quiet"])
    err = capsys.readouterr().err
    assert code == 2
    assert len(err.strip().splitlines()) == 1 and needle in err
    assert not (tmp_path / "s").exists()  # nothing written


def test_parse_grid_from_a_dict():
    grid = parse_grid({"model": {"d_model": 16}, "axes": {"model": {"n_layers": [1, 2]}}})
    assert [p.config.model.n_layers for p in grid.points()] == [1, 2]
