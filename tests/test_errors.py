"""The one error model: every error class's exit status, the one-line formatter, and ``cli.main``
as the one place that turns an error into one line and an exit status."""

import pytest

from listcopy import cli
from listcopy.checkpoint import CheckpointError
from listcopy.cli.args import UsageError
from listcopy.config import ConfigError
from listcopy.errors import BadInput, Failure, ListcopyError, one_line
from listcopy.sweep.grid import GridError
from listcopy.sweep.local import WorkerDied
from listcopy.sweep.ray_backend import RayMissing
from listcopy.sweep.runner import SweepBusy, SweepError
from listcopy.sweep.store import StoreError


@pytest.mark.parametrize("cls", [ConfigError, CheckpointError, UsageError, GridError, StoreError])
def test_bad_input_errors_exit_2_and_stay_value_errors(cls):
    err = cls("x")
    assert isinstance(err, BadInput) and isinstance(err, ValueError)
    assert err.exit_code == 2


@pytest.mark.parametrize("cls", [SweepError, SweepBusy, WorkerDied, RayMissing])
def test_failures_exit_1_and_stay_runtime_errors(cls):
    err = cls("x")
    assert isinstance(err, Failure) and isinstance(err, RuntimeError)
    assert err.exit_code == 1 and isinstance(err, ListcopyError)


@pytest.mark.parametrize("message, kwargs, line", [
    ("plain", {}, "plain"),
    ("  two\nlines \n\n  and a third  ", {}, "two lines and a third"),
    ("boom\nsecond line", {}, "boom second line"),
    ("first\nTraceback (most recent call last):\n  File x", {"first_line": True}, "first"),
    ("a\x1b[31mred\x00", {}, "a\\x1b[31mred\\x00"),
    ("tab\there", {}, "tab\\there"),
    ("keeps  two spaces", {}, "keeps  two spaces"),
    ("x" * 50, {"limit": 10}, "x" * 10),
    ("", {}, ""),
])
def test_one_line(message, kwargs, line):
    assert one_line(message, **kwargs) == line


def test_one_line_of_an_exception():
    assert one_line(ValueError("bad\nvalue")) == "bad value"
    assert one_line(KeyError()) == "KeyError"  # no message: its class


@pytest.mark.parametrize("cls", [ConfigError, CheckpointError, GridError, StoreError, SweepError])
def test_every_listcopy_error_is_one_line_whatever_it_names(cls):
    err = cls("bad file a\nb.toml:\n  line 2\x1b[31m")
    assert str(err) == "bad file a b.toml: line 2\\x1b[31m" and "\n" not in str(err)
    assert str(cls(str(err))) == str(err)  # made again (a pickled error crossing processes)


def test_a_key_named_by_a_control_character_is_shown_escaped():
    from listcopy.config import Config

    with pytest.raises(ConfigError, match=r"^unknown config key task\.\\n: allowed are "):
        Config.from_dict({"task": {"\n": None}})  # found by the generated bad input (issue 12)


def test_main_prints_a_library_error_as_one_line_with_its_exit_code(tmp_path, capsys):
    assert cli.main(["results", str(tmp_path)]) == 2  # StoreError: bad input
    err = capsys.readouterr().err
    assert err == f"listcopy results: error: {tmp_path / 'sweep.db'}: no sweep database here\n"


def test_main_exits_1_for_a_failure(tmp_path, capsys, monkeypatch):
    import listcopy.sweep.runner as runner

    def busy(*args, **kwargs):
        raise SweepBusy("sweeps/x: another sweep (pid 1) is running\nin this directory")

    monkeypatch.setattr(runner, "run_sweep", busy)
    grid = tmp_path / "g.toml"
    grid.write_text("seeds = [0]\n")
    assert cli.main(["sweep", str(grid), "--quiet"]) == 1
    assert capsys.readouterr().err == (
        "listcopy sweep: error: sweeps/x: another sweep (pid 1) is running in this directory\n")
