"""``report --png`` where the browser cannot run: one line, never the browser library's
tracebacks (a missing ``TMPDIR`` printed 72 lines and three tracebacks)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.conftest import FIXTURES


def report_png(tmp_path, **env):
    out = tmp_path / "r.html"
    result = subprocess.run(
        [sys.executable, "-m", "listcopy.cli", "report", str(FIXTURES / "3layer_100dig_8d.pt"),
         "--only", "attention", "--out", str(out), "--png", str(tmp_path / "png"), "--quiet"],
        capture_output=True, text=True, timeout=300, env={**os.environ, **env})
    notice = f"listcopy: {FIXTURES / '3layer_100dig_8d.pt'}: "  # the .pt's inferred config
    return result, [ln for ln in result.stderr.strip().splitlines() if not ln.startswith(notice)]


def test_a_missing_tmpdir_is_one_line(tmp_path):
    result, lines = report_png(tmp_path, TMPDIR=str(tmp_path / "nonexistent"))
    assert result.returncode == 2, result.stderr
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    assert "TMPDIR=" in lines[0] and "not a writable directory" in lines[0]
    assert not (tmp_path / "png").exists()


def test_a_browser_that_does_not_start_is_one_line(tmp_path):
    browser = tmp_path / "chromium"
    browser.write_text("#!/bin/sh\nexit 1\n")
    browser.chmod(0o755)
    result, lines = report_png(tmp_path, BROWSER_PATH=str(browser))
    assert result.returncode == 1, result.stderr
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    assert "--png: the browser" in lines[0] and "could not draw the figures" in lines[0]


@pytest.mark.parametrize("tmpdir", ["", None])
def test_an_unset_or_empty_tmpdir_is_fine_for_the_check(monkeypatch, tmpdir):
    from listcopy.report.png import check_tmpdir

    if tmpdir is None:
        monkeypatch.delenv("TMPDIR", raising=False)
    else:
        monkeypatch.setenv("TMPDIR", tmpdir)
    check_tmpdir()


class SilentKaleido:
    """A kaleido whose browser never answers: what choreographer does when the browser dies in
    the instant between its start and the first command (seen once in a full CI run)."""

    def __init__(self, *args, **kwargs):
        self.closed = False

    async def __aenter__(self):
        import asyncio

        await asyncio.Event().wait()

    async def __aexit__(self, *exc):
        self.closed = True


def test_a_browser_that_never_answers_is_a_bounded_one_line_failure(tmp_path, monkeypatch):
    import kaleido
    import plotly.graph_objects as go

    from listcopy.errors import Failure
    from listcopy.report.html import Figure
    from listcopy.report.png import write_pngs

    browser = tmp_path / "chromium"
    browser.write_text("#!/bin/sh\nexit 1\n")
    browser.chmod(0o755)
    monkeypatch.setenv("BROWSER_PATH", str(browser))
    monkeypatch.setattr(kaleido, "Kaleido", SilentKaleido)
    with pytest.raises(Failure, match=r"could not draw the figures: no answer within 0\.5 s$"):
        write_pngs([Figure("f", go.Figure())], tmp_path / "png", timeout_s=0.5)
    assert not list((tmp_path / "png").iterdir())
