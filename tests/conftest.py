import os
import random
import sys
from collections import Counter
from pathlib import Path

import pytest

FIXTURES = Path(__file__).parent / "fixtures"


def _hypothesis_profiles() -> None:
    """Generated inputs are the same on every run (``derandomize``), so that the suite cannot fail
    by chance; ``LISTCOPY_HYPOTHESIS=explore`` draws new ones (random, kept in .hypothesis/) to
    hunt for defects, each then pinned with ``@example`` in its test."""
    from hypothesis import settings

    settings.register_profile("fixed", derandomize=True, database=None)
    settings.register_profile("explore", derandomize=False)
    settings.load_profile(os.environ.get("LISTCOPY_HYPOTHESIS", "fixed"))


_hypothesis_profiles()


def pytest_ignore_collect(collection_path, config):
    """tests/gpu is collected only where torch sees a GPU (benchmarks/device_check.sh runs it)."""
    if collection_path == Path(__file__).parent / "gpu":
        import torch

        return not torch.cuda.is_available()
    return None


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


# ---- the reliability suite's figures -----------------------------------------------------------
# Tests count what they tried (tally["bad inputs tried"] += 1); the figures print at the end of
# the run. Under pytest-xdist each worker hands its counts to the controller when it finishes.

TALLY = pytest.StashKey[Counter]()
WORKER_FIGURES = "listcopy_reliability_figures"


def pytest_configure(config):
    config.stash[TALLY] = Counter()


@pytest.fixture
def tally(request) -> Counter:
    return request.config.stash[TALLY]


def pytest_sessionfinish(session):
    workeroutput = getattr(session.config, "workeroutput", None)  # on xdist workers only
    if workeroutput is not None:
        workeroutput[WORKER_FIGURES] = dict(session.config.stash[TALLY])


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node, error):
    node.config.stash[TALLY].update(getattr(node, "workeroutput", {}).get(WORKER_FIGURES, {}))


def pytest_terminal_summary(terminalreporter, config):
    counts = config.stash.get(TALLY, None)
    if counts:
        terminalreporter.section("reliability figures")
        for key in sorted(counts):
            terminalreporter.write_line(f"{key}: {counts[key]}")
