import os
import random
import sys
from pathlib import Path

import pytest

FIXTURES = Path(__file__).parent / "fixtures"


@pytest.fixture(autouse=True)
def _seed_everything():
    """Every test starts from the same global random state (tests never rely on it for results)."""
    import numpy as np
    import torch

    random.seed(0)
    np.random.seed(0)
    torch.manual_seed(0)
    yield


@pytest.fixture
def fixtures() -> Path:
    return FIXTURES


def run_cli(*args: str, cwd: Path | None = None, timeout: float = 600):
    """Run the real console command in a subprocess; returns CompletedProcess (text)."""
    import subprocess

    exe = Path(sys.executable).with_name("listcopy")
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "listcopy.cli"]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.run([*cmd, *args], capture_output=True, text=True, cwd=cwd, timeout=timeout,
                          env=env)
