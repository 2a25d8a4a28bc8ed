"""Helpers for the sweep tests: tiny grids (10 digits, a few hundred steps) and the CLI."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

TINY_BASE = """
[task]
n_digits = 10
[train]
batch_size = 16
eval_every = 50
checkpoint_every = 100
device = "cpu"
"""


def write_grid(path: Path, body: str, base: str = TINY_BASE) -> Path:
    """``body`` first (top-level keys such as ``seeds`` come before any table), then ``base``."""
    path.write_text(textwrap.dedent(body) + "\n" + textwrap.dedent(base))
    return path


@pytest.fixture
def grid_file(tmp_path):
    def make(body: str, name: str = "grid.toml", base: str = TINY_BASE) -> Path:
        return write_grid(tmp_path / name, body, base)
    return make


def cli_command() -> list[str]:
    """The real ``listcopy`` command (the console script, or ``python -m listcopy.cli``)."""
    exe = Path(sys.executable).with_name("listcopy")
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "listcopy.cli"]


def run_sweep_cli(*args: str, timeout: float = 900, **kwargs) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.run([*cli_command(), *args], capture_output=True, text=True,
                          timeout=timeout, env=env, **kwargs)


def assert_one_line_error(result, code: int, *needles: str) -> None:
    assert result.returncode == code, (result.returncode, result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]
