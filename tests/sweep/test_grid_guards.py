"""Grids that exhaust memory or time, and grid entries that used to go wrong silently: counted
before anything is expanded, expanded once and lazily, names that cannot name a run directory
refused, ``train.seed`` in one place only, one configuration per name when grouping by name."""

from __future__ import annotations

from pathlib import Path

import pytest

from listcopy import cli
from listcopy.config import Config
from listcopy.sweep import grid as grid_module
from listcopy.sweep.grid import GridError, config_hash, load_grid, parse_grid
from listcopy.sweep.runner import plan, run_dir_name
from listcopy.sweep.store import DB_FILE, Store


def test_a_huge_product_is_counted_not_built(grid_file):
    """10 axes of 10 values: 10^10 entries, refused before ``itertools.product`` is expanded
    (it used to end in a MemoryError)."""
    axes = "\n".join(f'"train.lr" = [{", ".join(str(0.001 * (i + 1)) for i in range(10))}]'
                     .replace("train.lr", key) for key in (
                         "train.lr", "train.weight_decay", "train.early_stop_acc", "task.train_frac",
                         "train.max_steps", "model.d_model", "task.split_seed", "train.eval_every",
                         "train.batch_size", "train.checkpoint_every"))
    path = grid_file("[axes]\n" + axes)
    with pytest.raises(GridError, match=r"10,000,000,000 runs; at most 1,000,000 in one grid "
                                        r"unless --allow-large"):
        load_grid(path)


def test_the_entry_limit_is_policy(grid_file):
    body = 'seeds = "0-999"\n[axes]\n"task.split_seed" = [' + ", ".join(map(str, range(1001))) + "]"
    with pytest.raises(GridError, match="1,001,000 runs"):
        load_grid(grid_file(body))
    grid = load_grid(grid_file(body), allow_large=True)  # checked, not expanded
    assert grid.n_entries == 1_001_000 and len(grid.combos) == 1001


def test_seeds_are_not_validated_one_config_at_a_time(grid_file, monkeypatch):
    """Entries differ from their spec x axes combination only by the seed: a config is built and
    checked per combination, not per entry (a 10^6-entry grid took minutes)."""
    built = []
    real = Config.from_dict.__func__

    def counted(cls, *args, **kwargs):
        built.append(1)
        return real(cls, *args, **kwargs)

    monkeypatch.setattr(Config, "from_dict", classmethod(counted))
    grid = load_grid(grid_file('seeds = "0-4999"\n[axes]\n"train.lr" = [1e-3, 3e-4]'))
    points = grid.points()
    assert len(points) == 10_000
    assert len(built) <= 2 + 2  # the base, the two combinations (and slack for one more)
    assert [p.seed for p in points[:3]] == [0, 1, 2] and points[-1].config.train.lr == 3e-4


def test_expanded_keys_are_config_hashes(grid_file):
    grid = load_grid(grid_file("""
        seeds = [7, 0, 123456789]
        [[specs]]
        name = "a"
        "model.d_model" = 16
        [[specs]]
        name = "b"
        "train.lr" = 3e-4
        [axes]
        "model.ln" = [false, true]
    """))
    points = grid.points()
    assert len(points) == 12
    for p in points:
        assert p.key == config_hash(p.config)
        assert p.config == Config.from_flat({**dict(p.settings), "train.seed": p.seed},
                                            base=grid.base)


def test_expansion_reports_its_progress(grid_file, monkeypatch):
    seen = []

    class Bar:
        def __init__(self, total, desc, unit, enabled=True):
            self.total, self.n = total, 0
            seen.append(self)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            pass

        def update(self, n=1):
            self.n += n

    monkeypatch.setattr(grid_module, "progress_bar", Bar)
    grid = load_grid(grid_file('seeds = "0-19999"\n[axes]\n"train.lr" = [1e-3, 3e-4, 1e-4]'))
    grid.points()
    assert [(b.total, b.n) for b in seen] == [(3, 3), (60_000, 60_000)]


def test_a_spec_name_too_long_for_a_folder_is_refused_at_load(grid_file, tmp_path, capsys):
    path = grid_file(f'[[specs]]\nname = "{"x" * 300}"\n')
    code = cli.main(["sweep", str(path), "--dry-run", "--out", str(tmp_path / "s")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "specs[0].name: 300 characters; at most 200" in err[0]


def test_names_made_of_many_axes_still_name_a_folder(grid_file):
    axes = "\n".join(f'"{k}" = [{v}]' for k, v in (
        ("train.lr", "0.000123456789"), ("train.weight_decay", "0.0123456789"),
        ("train.early_stop_acc", "0.987654321"), ("task.train_frac", "0.8123456789"),
        ("train.max_steps", "123456789"), ("train.eval_every", "123456789"),
        ("train.checkpoint_every", "123456789"), ("task.split_seed", "1234567890123456789"),
        ("model.freeze_wv", "false"), ("model.freeze_wo", "false"), ("model.use_bias", "true")))
    spec = f'[[specs]]\nname = "{"n" * 200}"\n'
    grid = load_grid(grid_file(f"seeds = [{2**63 - 1}]\n{spec}[axes]\n{axes}"))
    [run] = grid.runs()
    assert len(run.names[0]) > 255
    name = run_dir_name(run).name
    assert len(name.encode()) <= 255 and name.endswith(run.key[:8])


def test_train_seed_is_given_in_one_place(grid_file):
    with pytest.raises(GridError, match=r"specs\[1\] \(b\) sets train.seed and the grid has "
                                        r"top-level seeds"):
        load_grid(grid_file('seeds = "0-3"\n[[specs]]\nname = "a"\n[[specs]]\nname = "b"\n'
                            '"train.seed" = 5\n'))
    with pytest.raises(GridError, match=r"\[train\] sets train.seed"):
        load_grid(grid_file('seeds = "0-3"\n', base="[train]\nseed = 4\n"))


def test_without_seeds_each_entry_keeps_its_own_seed(grid_file):
    grid = load_grid(grid_file('[[specs]]\nname = "a"\n[[specs]]\nname = "b"\n"train.seed" = 5\n',
                               base="[task]\nn_digits = 10\n[train]\nseed = 2\n"))
    assert [(p.name, p.seed) for p in grid.points()] == [("a", 2), ("b", 5)]


def test_parse_grid_keeps_the_base_seed_without_seeds():
    grid = parse_grid({"train": {"seed": 9}, "axes": {"model.n_layers": [1, 2]}})
    assert [p.seed for p in grid.points()] == [9, 9]


@pytest.fixture
def twin_names(tmp_path, grid_file):
    """The notebook's grid has two [[specs]] named d128_2layer (with and without LayerNorm)."""
    grid = load_grid(grid_file('seeds = "0-1"\n[[specs]]\nname = "two"\n"model.n_layers" = 2\n'
                               '[[specs]]\nname = "two"\n"model.n_layers" = 2\n"model.ln" = true\n'))
    runs = grid.runs()
    with Store(tmp_path / DB_FILE) as store:
        store.add(runs, lambda r: f"runs/{r.key}")
        store.start(r.key for r in runs)
        for i, r in enumerate(runs):
            store.finish(r.key, {"status": "done", "stop_reason": "max_steps", "steps": 10,
                                 "loss": 0.1, "acc": 0.5 + 0.1 * i, "seq_acc": 0.2,
                                 "steps_to_threshold": None, "wall_time_s": 1.0, "error": None})
    return tmp_path


def test_grouping_by_a_name_two_configs_share_is_refused(twin_names, capsys):
    code = cli.main(["results", str(twin_names), "--group-by", "name"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1, err
    assert "'two' names entries with different model.ln; add it to --group-by" in err[0]
    assert cli.main(["results", str(twin_names), "--group-by", "name,ln"]) == 0
    out = capsys.readouterr().out
    assert "| two  | False |" in out and "| two  | True  |" in out


def test_a_sweep_says_which_spec_names_are_shared(grid_file, tmp_path, capsys):
    path = grid_file('[[specs]]\nname = "two"\n"model.n_layers" = 2\n'
                     '[[specs]]\nname = "two"\n"model.ln" = true\n[[specs]]\nname = "one"\n')
    assert load_grid(path).shared_names == ("two",)
    assert cli.main(["sweep", str(path), "--out", str(tmp_path / "s"), "--dry-run"]) == 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "several [[specs]] are named 'two'" in err[0], err
    assert load_grid(grid_file('[[specs]]\nname = "a"\n[[specs]]\nname = "b"\n')).shared_names == ()


def test_a_plan_that_does_not_fit_is_refused_before_the_sweep_folder(grid_file, tmp_path,
                                                                     monkeypatch):
    from listcopy import resources

    monkeypatch.setattr(resources, "available_memory", lambda: 5 * 10**6)
    path = grid_file('seeds = "0-999"\n')
    with pytest.raises(resources.TooLarge, match="needs about"):
        plan(path, tmp_path / "s", workers=1)
    code = cli.main(["sweep", str(path), "--out", str(tmp_path / "s"), "--quiet"])
    assert code == 2 and not Path(tmp_path / "s").exists()
