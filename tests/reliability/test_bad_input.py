"""Generated bad input: every config, --set string or command line is either accepted (and then
works) or refused with one line and exit 2. Never a traceback, never a partial file."""

import contextlib
import io
import math

import torch
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from listcopy import cli
from listcopy.config import SECTIONS, Config, ConfigError, parse_overrides
from listcopy.model import build_model
from tests.conftest import FIXTURES

KEYS = {name: [f.name for f in cls.__dataclass_fields__.values()] for name, cls in SECTIONS.items()}
VALUES = st.one_of(
    st.integers(-(10**12), 10**12), st.integers(-3, 300),
    st.floats(allow_nan=True, allow_infinity=True), st.floats(-2, 2),
    st.booleans(), st.text(max_size=12), st.sampled_from(["auto", "cpu", "cuda", "mps", "cuda:0"]),
    st.lists(st.integers(0, 3), max_size=3), st.none(),
)
KEY_NAMES = st.one_of(st.sampled_from([k for ks in KEYS.values() for k in ks]), st.text(max_size=10))
SECTION = st.dictionaries(KEY_NAMES, VALUES, max_size=4)
CONFIG_DICTS = st.dictionaries(
    st.one_of(st.sampled_from(list(SECTIONS)), st.text(max_size=8)),
    st.one_of(SECTION, VALUES), max_size=3)

FAST = settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))


def _one_line(err: Exception) -> bool:
    text = str(err)
    return bool(text) and "\n" not in text and "Traceback" not in text


@FAST
@given(CONFIG_DICTS)
@example({"task": {"\n": None}})  # a key with a newline once broke the line (issue 12)
def test_config_dicts_are_accepted_or_refused_in_one_line(tally, data):
    tally["bad inputs tried (config tables)"] += 1
    try:
        config = Config.from_dict(data)
    except ConfigError as err:
        assert _one_line(err)
        return
    # accepted: it must describe a buildable model and round-trip
    assert Config.from_dict(config.to_dict()) == config
    t, m = config.task, config.model
    if t.n_data <= 10_000 and m.d_model <= 64 and m.n_layers <= 4:
        model = build_model(config)
        tokens = torch.full((2, t.seq_len), t.sep)
        assert torch.isfinite(model(tokens)).all()


SET_KEYS = st.one_of(
    st.sampled_from([f"{s}.{k}" for s, ks in KEYS.items() for k in ks]),
    st.text(max_size=15))
SET_VALUES = st.one_of(
    st.sampled_from(["1", "0", "-1", "1e-3", "nan", "inf", "true", "false", '"cpu"', "cpu", "[1,2]",
                     "{a=1}", "", "  ", "8.0", "1e400", "0x10", "'x'", '"', "=", "3 4"]),
    st.text(max_size=10))
SET_STRINGS = st.one_of(st.builds(lambda k, v: f"{k}={v}", SET_KEYS, SET_VALUES), st.text(max_size=20))


@FAST
@given(st.lists(SET_STRINGS, min_size=1, max_size=3))
def test_set_strings_are_accepted_or_refused_in_one_line(tally, items):
    tally["bad inputs tried (--set strings)"] += 1
    try:
        config = Config().override(items)
    except ConfigError as err:
        assert _one_line(err)
        return
    assert isinstance(parse_overrides(items), dict)
    for section in config.to_dict().values():
        for value in section.values():
            assert not (isinstance(value, float) and not math.isfinite(value))


def _run_main(argv):
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = cli.main(argv)
        except SystemExit as exit_:  # argparse refuses bad arguments itself (exit 2, usage)
            code = exit_.code
    return code, out.getvalue(), err.getvalue()


ARG_TOKENS = st.one_of(
    st.sampled_from(["--set", "--json", "--out", "--seeds", "--threads", "--config", "-x", "0-3",
                     "model.d_model=16", "task.n_digits=50", "train.lr=-1", "task.list_len=3",
                     "task.train_frac=0.5", "model.ln=true", str(FIXTURES / "seed_default_1000.pt"),
                     "/nonexistent", str(FIXTURES)]),
    SET_STRINGS)


@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.sampled_from(["eval", "info"]), st.lists(ARG_TOKENS, max_size=5))
def test_command_lines_exit_0_or_2_without_a_traceback(tally, command, args):
    tally["bad inputs tried (command lines)"] += 1
    code, out, err = _run_main([command, *args])
    assert "Traceback" not in err
    if code == 0:
        assert out.strip()
    else:
        assert code == 2, (command, args, err)
        assert err.strip()
        if not err.startswith("usage:"):  # argparse prints usage + one error line
            assert len(err.strip().splitlines()) == 1, err
