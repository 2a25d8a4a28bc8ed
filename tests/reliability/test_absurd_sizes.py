"""Generated absurd sizes: vocabularies, widths, depths, list lengths, batches, samples, seeds and
grids far beyond any machine, through every command that trains, plans or loads. Each is refused
before any work with one line and exit 2, and nothing is written.

The machine is taken to have 16 GB available (the guards' arithmetic is what is tested, the same
on every machine); the work itself (training, a sweep's backend, a frontier search, building a
model to check a checkpoint against) is replaced by a trap, so a size that slipped through fails
the test at once instead of allocating.
"""

from __future__ import annotations

import contextlib
import io
import os
import tempfile
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from listcopy import checkpoint, cli, frontier, resources, training
from listcopy.sweep import runner
from tests.conftest import FIXTURES

# each alone cannot be trained here (memory, a policy limit or the config's own range)
ALONE = [
    ("task.n_digits", 99999999999), ("task.n_digits", 10**15), ("task.n_digits", 10**40),
    ("model.d_model", 100000000), ("model.d_model", 10**12), ("model.d_model", 2**40),
    ("model.n_layers", 100000000), ("model.n_layers", 10000), ("model.n_layers", 65),
    ("model.n_layers", 10**12), ("task.list_len", 65), ("task.list_len", 10**6),
    ("task.n_samples", 10**7), ("task.n_samples", 10**12),
]
# together they cannot (each alone can)
TOGETHER = [  # (the C kernel streams examples: the torch path's widths, LayerNorm, biases)
    [("task.list_len", 64), ("task.n_samples", 10**6), ("model.d_model", 4096)],
    [("task.n_digits", 100000), ("train.batch_size", 10**9), ("model.d_model", 128)],
    [("task.n_digits", 20000), ("train.batch_size", 10**12), ("model.d_model", 512)],
    [("task.list_len", 64), ("task.n_samples", 10**6), ("task.n_digits", 10**4),
     ("model.ln", True)],
]
SIZES = st.one_of(st.sampled_from(ALONE).map(lambda kv: [kv]), st.sampled_from(TOGETHER))
SEEDS = st.sampled_from(["0-99999999", "0-99999", "0-99999,100000-199999", f"0-{10**18}",
                         "0-50000,60000-120000"])


def _value(v) -> str:
    return str(v).lower() if isinstance(v, bool) else str(v)


def train_argv(sizes, seeds):
    argv = ["train", "--quiet"] + [a for k, v in sizes for a in ("--set", f"{k}={_value(v)}")]
    return argv + (["--seeds", seeds] if seeds else [])


def sweep_argv(sizes, seeds, where):
    lines = [f'seeds = "{seeds}"'] if seeds else []
    if where == "specs":
        lines += ["[[specs]]", 'name = "huge"'] + [f'"{k}" = {_value(v)}' for k, v in sizes]
    elif where == "axes":
        lines += ["[axes]"] + [f'"{k}" = [{_value(v)}]' for k, v in sizes]
    else:  # the base config
        tables: dict[str, list[str]] = {}
        for k, v in sizes:
            section, key = k.split(".")
            tables.setdefault(section, []).append(f"{key} = {_value(v)}")
        lines += [f"[{s}]\n" + "\n".join(kv) for s, kv in tables.items()]
    Path("grid.toml").write_text("\n".join(lines) + "\n")
    return ["sweep", "grid.toml", "--quiet", "--workers", "1"]


def frontier_argv(sizes, seeds, where):
    argv = ["frontier", "--quiet"]
    for k, v in sizes:
        if k == "model.d_model":  # what frontier searches, up to --d-max
            argv += ["--d-max", str(v)]
        else:
            argv += ["--axis" if where == "axes" else "--set", f"{k}={_value(v)}"]
    return argv + (["--seeds", str(10**8)] if seeds else [])


def eval_argv(sizes):
    """A seed .pt of the default model's tensors under a name that claims another size."""
    name = {"model.n_layers": 3, "task.n_digits": 100, "model.d_model": 8}
    name.update({k: v for k, v in sizes if k in name})
    path = Path(f"{name['model.n_layers']}layer_{name['task.n_digits']}dig_"
                f"{name['model.d_model']}d.pt")
    if path.name == "3layer_100dig_8d.pt":
        return None
    path.write_bytes((FIXTURES / "3layer_100dig_8d.pt").read_bytes())
    return ["eval", str(path)]


def trap(*args, **kwargs):
    raise AssertionError("an absurd size reached the work")


@pytest.fixture
def guarded(monkeypatch):
    monkeypatch.setattr(resources, "available_memory", lambda: 16 * 10**9)
    for module, name in ((training, "train_ensemble"), (runner, "_backend"),
                         (frontier, "search_frontier"), (checkpoint, "expected_state")):
        monkeypatch.setattr(module, name, trap)


FAST = settings(max_examples=200, deadline=None, suppress_health_check=list(HealthCheck))


@FAST
@given(command=st.sampled_from(["train", "sweep", "frontier", "eval"]), sizes=SIZES,
       seeds=st.one_of(st.none(), SEEDS), where=st.sampled_from(["specs", "axes", "base"]))
def test_absurd_sizes_are_refused_in_one_line_and_nothing_is_written(guarded, tally, command,
                                                                     sizes, seeds, where):
    with tempfile.TemporaryDirectory() as d, contextlib.chdir(d):
        if command == "train":
            argv = train_argv(sizes, seeds)
        elif command == "sweep":
            argv = sweep_argv(sizes, seeds, where)
        elif command == "frontier":
            argv = frontier_argv(sizes, seeds, where)
        else:
            argv = eval_argv(sizes)
            if argv is None:
                return
        before = sorted(os.listdir("."))
        err = io.StringIO()
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            code = cli.main(argv)
        tally["absurd sizes tried (train, sweep, frontier, seed .pt names)"] += 1
        lines = err.getvalue().strip().splitlines()
        assert code == 2, (argv, err.getvalue())
        assert len(lines) == 1 and "Traceback" not in lines[0], (argv, lines)
        assert sorted(os.listdir(".")) == before, argv  # nothing written


@pytest.mark.parametrize("axes", [10, 7])
def test_grids_of_absurd_products_are_counted_not_built(guarded, tally, tmp_path, monkeypatch,
                                                        axes):
    keys = ["train.lr", "train.weight_decay", "train.early_stop_acc", "task.train_frac",
            "train.max_steps", "model.d_model", "task.split_seed", "train.eval_every",
            "train.batch_size", "train.checkpoint_every"][:axes]
    values = {k: [round(0.001 * (i + 1), 3) if "lr" in k or "decay" in k or "frac" in k
                  or "acc" in k else i + 1 for i in range(10)] for k in keys}
    (tmp_path / "g.toml").write_text("[axes]\n" + "\n".join(f'"{k}" = {v}'
                                                            for k, v in values.items()) + "\n")
    monkeypatch.chdir(tmp_path)
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        code = cli.main(["sweep", "g.toml", "--dry-run", "--quiet"])
    tally["absurd sizes tried (grid products)"] += 1
    assert code == 2 and f"{10**axes:,} runs" in err.getvalue()
    assert os.listdir(tmp_path) == ["g.toml"]


def test_torch_is_untouched_by_the_guards():
    """The refusals above allocate nothing: no tensor of an absurd size was ever made."""
    assert torch.empty(0).numel() == 0
