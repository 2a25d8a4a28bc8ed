"""The reliability suite counts what it tried and prints the figures at the end of the run."""

from collections import Counter

import pytest

TALLY = pytest.StashKey[Counter]()


def pytest_configure(config):
    config.stash[TALLY] = Counter()


@pytest.fixture
def tally(request) -> Counter:
    """Add to it: tally["bad inputs tried"] += 1 ..."""
    return request.config.stash[TALLY]


def pytest_terminal_summary(terminalreporter, config):
    counts = config.stash.get(TALLY, None)
    if counts:
        terminalreporter.section("reliability figures")
        for key in sorted(counts):
            terminalreporter.write_line(f"{key}: {counts[key]}")
