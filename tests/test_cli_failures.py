"""Inputs that used to end in a traceback, a wrong exit status or a hang, each now one line:
deeply nested TOML and JSON, a config that never ends, checkpoint names that claim a huge model,
paths that cannot be used (exit 2, as any other bad input), frontier options it cannot honour."""

import contextlib
import importlib
import json
import os
import shutil
import socket
import tempfile
from pathlib import Path

import pytest
import torch

from listcopy import cli
from listcopy.checkpoint import CheckpointError, load
from tests.conftest import FIXTURES, run_cli

DEEP = 5000  # deeper than Python's recursion limit


def one_line(capsys, code, expected=2, *needles):
    err = capsys.readouterr().err.strip().splitlines()
    assert code == expected, (code, err)
    assert len(err) == 1 and "Traceback" not in err[0], err
    for needle in needles:
        assert needle in err[0], err[0]
    return err[0]


@pytest.mark.parametrize("text", ["a = " + "[" * DEEP + "]" * DEEP,
                                  "[model]\nd_model = " + "[" * DEEP + "]" * DEEP,
                                  "x = " + "{a = " * DEEP + "1" + "}" * DEEP])
@pytest.mark.parametrize("command", [["train", "--quiet", "--config"], ["sweep", "--dry-run"]])
def test_deeply_nested_toml_is_one_line(tmp_path, capsys, monkeypatch, text, command):
    (tmp_path / "deep.toml").write_text(text)
    monkeypatch.chdir(tmp_path)
    one_line(capsys, cli.main([*command, "deep.toml"]), 2, "deep.toml", "nested too deeply")
    assert os.listdir(tmp_path) == ["deep.toml"]


def test_deeply_nested_set_value_is_one_line(capsys):
    one_line(capsys, cli.main(["train", "--set", "model.d_model=" + "[" * DEEP + "]" * DEEP]), 2,
             "nested too deeply")


def test_deeply_nested_run_json_is_one_line(tmp_path, capsys):
    (tmp_path / "run.json").write_text("[" * 100_000 + "]" * 100_000)
    one_line(capsys, cli.main(["eval", str(tmp_path)]), 2, "run.json", "nested too deeply")


def test_a_config_that_never_ends_is_read_with_a_limit(capsys):
    one_line(capsys, cli.main(["train", "--config", "/dev/zero"]), 2, "/dev/zero",
             "larger than 16 MiB")


@pytest.fixture(scope="module")
def seed_state():
    return torch.load(FIXTURES / "3layer_100dig_8d.pt", weights_only=True)


@pytest.mark.parametrize("name, sets, needle", [
    # the name against the tensors (infer.py, before any model is built)
    ("3layer_100dig_100000d.pt", [], "the name says model.d_model = 100000, the tensors 8"),
    ("100000000layer_100dig_8d.pt", [], "the name says 100000000 layers, the tensors hold 3"),
    ("3layer_99999999999dig_8d.pt", [], "a vocab of 101 fits no variant of 99999999999 digits"),
    # --set against the tensors (checkpoint.check_state_size, before the expected model is built)
    ("x.pt", ["model.d_model=100000"], "'embed.W_E' has shape (101, 8), expected (101, 100000)"),
    ("x.pt", ["model.n_layers=100000000"], "missing tensors of 'blocks.3'"),
    ("x.pt", ["task.n_digits=99999999999"], "a vocab of 101 fits no variant of 99999999999"),
])
def test_a_seed_name_claiming_a_huge_model_builds_nothing(tmp_path, seed_state, name, sets, needle):
    """The tensors are checked against the name and ``--set`` before a model of their size is
    built (``3layer_100dig_100000d.pt`` used to allocate 40 GB, ``100000000layer...`` to hang)."""
    path = tmp_path / name
    torch.save(seed_state, path)
    with pytest.raises(CheckpointError) as err:
        load(path, sets)
    assert needle in str(err.value), err.value


def test_a_run_json_claiming_a_huge_model_builds_nothing(tmp_path):
    run = tmp_path / "r"
    result = run_cli("train", "--set", "task.n_digits=10", "--set", "train.max_steps=20",
                     "--set", "train.eval_every=10", "--out", str(run), "--quiet")
    assert result.returncode == 0, result.stderr
    record = json.loads((run / "run.json").read_text())
    record["config"]["model"]["n_layers"] = 100_000_000
    (run / "run.json").write_text(json.dumps(record))
    with pytest.raises(CheckpointError, match="3 of 100000000 layers present"):
        load(run)


# ---- paths that cannot be used: exit 2 ---------------------------------------------------------

@pytest.fixture
def places(tmp_path):
    (tmp_path / "afile").write_text("x")
    (tmp_path / "adir").mkdir()
    shutil.copy(FIXTURES / "3layer_100dig_8d.pt", tmp_path / "3layer_100dig_8d.pt")
    return tmp_path


@pytest.mark.parametrize("argv, needle", [
    (["train", "--out", "afile", "--quiet"], "--out afile: exists and is not a directory"),
    (["train", "--out", "afile/sub", "--quiet"], "--out afile/sub: afile is not a directory"),
    (["export", "3layer_100dig_8d.pt", "--out", "adir"], "--out adir: is a directory"),
    (["export", "3layer_100dig_8d.pt", "--out", "afile/x.pt"], "afile is not a directory"),
    (["analyze", "3layer_100dig_8d.pt", "--only", "parameters", "--json", "adir"],
     "--json adir: is a directory"),
    (["analyze", "3layer_100dig_8d.pt", "--only", "parameters", "--json", "afile/a.json"],
     "afile is not a directory"),
    (["report", "3layer_100dig_8d.pt", "--only", "parameters", "--out", "afile/r.html",
      "--quiet"], "afile is not a directory"),
    (["sweep", "g.toml", "--out", "afile", "--quiet"], "--out afile: exists and is not a"),
    (["frontier", "--out", "afile", "--quiet"], "--out afile: exists and is not a directory"),
])
def test_output_paths_that_cannot_be_used_exit_2_before_work(places, monkeypatch, capsys, argv,
                                                              needle):
    (places / "g.toml").write_text("[task]\nn_digits = 10\n")
    monkeypatch.chdir(places)
    before = sorted(os.listdir(places))
    one_line(capsys, cli.main(argv), 2, needle)
    assert sorted(os.listdir(places)) == before


NOBODY = 65534


@pytest.fixture
def shared_dir():
    """A folder another user can enter (pytest's own temporary folders are root's alone)."""
    with tempfile.TemporaryDirectory(prefix="listcopy-perm-") as d:
        os.chmod(d, 0o755)
        yield Path(d)


@contextlib.contextmanager
def as_nobody():
    """This process with nobody's effective user and group (root's are back afterwards): file
    permissions apply again. The modules a command needs are imported before."""
    os.setegid(NOBODY)
    os.seteuid(NOBODY)
    try:
        yield
    finally:
        os.seteuid(0)
        os.setegid(0)


@pytest.mark.skipif(os.geteuid() != 0, reason="switches to another user: needs root")
@pytest.mark.parametrize("argv, needle", [
    (["info", "locked"], "Permission denied"),
    (["results", "locked"], "Permission denied"),
    (["eval", "locked.pt"], "Permission denied"),
    (["train", "--config", "locked.toml"], "Permission denied"),
    (["sweep", "locked.toml", "--dry-run"], "Permission denied"),
    (["train", "--out", "locked/new", "--quiet"], "Permission denied"),
])
def test_paths_without_permission_exit_2(shared_dir, monkeypatch, capsys, argv, needle):
    for module in ("training", "checkpoint", "metrics", "sweep.results", "sweep.runner",
                   "analysis", "resources"):
        importlib.import_module(f"listcopy.{module}")
    (shared_dir / "locked").mkdir(mode=0o700)
    shutil.copy(FIXTURES / "3layer_100dig_8d.pt", shared_dir / "locked.pt")
    (shared_dir / "locked.toml").write_text("[model]\nd_model = 8\n")
    for f in ("locked.pt", "locked.toml"):
        os.chmod(shared_dir / f, 0o600)
    monkeypatch.chdir(shared_dir)
    with as_nobody():
        code = cli.main(argv)
    one_line(capsys, code, 2, needle)


# ---- frontier --------------------------------------------------------------------------------

@pytest.mark.parametrize("argv, needle", [
    (["--axis", "model.d_model=64,128"], "--axis model.d_model: frontier searches model.d_model"),
    (["--axis", "train.seed=1,2"], "--axis train.seed"),
    (["--seeds", "100000000"], "--seeds 100000000: at most 100,000 seeds"),
    (["--seeds", "100000000", "--allow-large"], "needs about"),
    (["--layers", "2,100"], "model.n_layers = 100: at most 64"),
    (["--axis", "task.n_digits=10,20", "--axis", "task.list_len=1,2,3,4,5,6,7,8,9,10",
      "--seeds", "100000"], "2,000,000 runs in one round"),
    (["--layers", ""], "--layers '': no values"),
    (["--layers", ","], "--layers ',': no values"),
    (["--axis", "task.n_digits=10,10"], "10 is given twice"),
    (["--address", "auto"], "--address needs --backend ray"),
    (["--backend", "ray", "--address", "host:99999"], "use auto, HOST:PORT or ray://HOST:PORT"),
    (["--backend", "ray", "--address", "nocolon"], "use auto, HOST:PORT or ray://HOST:PORT"),
])
def test_frontier_refuses_what_it_cannot_honour(tmp_path, monkeypatch, capsys, argv, needle):
    monkeypatch.chdir(tmp_path)
    one_line(capsys, cli.main(["frontier", *argv, "--quiet"]), 2, needle)
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("argv, needle", [
    (["sweep", "g.toml", "--threads", "0"], "argument --threads: 0 must be >= 1"),
    (["sweep", "g.toml", "--workers", "-1"], "argument --workers: -1 must be >= 0"),
    (["frontier", "--workers", "-1"], "argument --workers: -1 must be >= 0"),
    (["frontier", "--workers", "two"], "argument --workers: 'two' is not an integer"),
])
def test_sweep_and_frontier_counts_are_checked_by_the_parser(tmp_path, argv, needle):
    result = run_cli(*argv, "--quiet", cwd=tmp_path)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert needle in result.stderr.strip().splitlines()[-1] and os.listdir(tmp_path) == []


@pytest.mark.parametrize("argv", [["train"], ["sweep", "g.toml"], ["frontier"], ["paper"],
                                  ["export", str(FIXTURES / "3layer_100dig_8d.pt")]])
def test_an_empty_out_is_refused_not_taken_for_the_default(tmp_path, argv):
    result = run_cli(*argv, "--out", "", cwd=tmp_path)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "argument --out: an empty path" in result.stderr.strip().splitlines()[-1]
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("argv", [["sweep", "g.toml"], ["frontier"]])
def test_a_sweep_into_a_training_run_is_refused(tmp_path, monkeypatch, capsys, argv):
    from listcopy.checkpoint import RUN_FILE

    monkeypatch.chdir(tmp_path)
    (tmp_path / "g.toml").write_text("seeds = [0]\n")
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / RUN_FILE).write_text("{}")
    code = cli.main([*argv, "--out", "run", "--quiet"])
    one_line(capsys, code, 2, "--out run: holds a training run, not a sweep")
    assert os.listdir(tmp_path / "run") == [RUN_FILE]


@pytest.mark.parametrize("seeds", [[], ["--seeds", "0-1"]])
def test_a_training_run_into_a_sweep_is_refused(tmp_path, monkeypatch, capsys, seeds):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "sweep").mkdir()
    (tmp_path / "sweep" / "sweep.db").write_bytes(b"")
    code = cli.main(["train", *seeds, "--out", "sweep", "--quiet"])
    one_line(capsys, code, 2, "--out sweep: holds a sweep (sweep.db), not a training run")
    assert os.listdir(tmp_path / "sweep") == ["sweep.db"]


def closed_port() -> int:
    """A local port nothing listens on (bound, then released: connecting is refused)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("command", ["frontier", "sweep"])
def test_a_ray_address_that_answers_nothing_is_one_line_before_any_work(tmp_path, monkeypatch,
                                                                        capsys, command):
    """Ray itself would retry such an address for minutes; nothing is written."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "g.toml").write_text("seeds = [0]\n")
    first = ["g.toml"] if command == "sweep" else []
    address = f"127.0.0.1:{closed_port()}"
    code = cli.main([command, *first, "--backend", "ray", "--address", address, "--quiet",
                     "--out", "out"])
    one_line(capsys, code, 1, f"--address {address}: no Ray cluster answers there")
    assert os.listdir(tmp_path) == ["g.toml"]


def test_frontier_refuses_a_d_model_it_would_ignore(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    one_line(capsys, cli.main(["frontier", "--set", "model.d_model=64", "--quiet"]), 2,
             "--set model.d_model: frontier searches model.d_model itself")


def test_a_reader_that_goes_away_ends_the_command_quietly(tmp_path):
    """`listcopy results ... | head`: the pipe closes under a long output; the command ends with
    exit 0 and nothing on stderr, as Unix tools do (it printed 'error: Broken pipe')."""
    import subprocess
    import sys

    code = ("import sys; from listcopy import cli; from listcopy.cli import model\n"
            "model.cmd_info = lambda args: [print('x' * 99) for _ in range(10 ** 5)] and 0\n"
            "sys.exit(cli.main(['info', 'any']))")
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    assert proc.stdout.readline().strip() == b"x" * 99
    proc.stdout.close()
    assert proc.wait(timeout=120) == 0
    assert proc.stderr.read() == b""
