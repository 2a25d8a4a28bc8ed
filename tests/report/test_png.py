"""PNG export through kaleido with the system's Chromium: nothing downloaded."""

from __future__ import annotations

import asyncio
import os
import struct

import plotly.graph_objects as go
import pytest

from listcopy.config import ConfigError
from listcopy.report import Figure, model_report, write_pngs
from listcopy.report.png import calc_fig, find_browser


def png_size(path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", data[16:24])


@pytest.fixture
def browser_present():
    try:
        return find_browser()
    except ConfigError as err:
        if os.environ.get("CI"):
            raise
        pytest.skip(str(err))


def test_figures_become_pngs_at_their_size(browser_present, default_model, tmp_path):
    info = model_report(default_model, tmp_path / "r.html", png_dir=tmp_path / "png",
                        progress=False, only="attention")
    assert [p.name for p in info.pngs] == ["attention_example.png", "attention_mean.png"]
    assert png_size(info.pngs[0]) == (2 * 1100, 2 * 450)  # scale 2, the figure's own height

    scene = go.Figure(go.Scatter3d(x=[0, 1], y=[0, 1], z=[0, 1], mode="markers+text",
                                   text=["0", "1"]))
    scene.update_layout(width=400, height=300)
    paths = write_pngs([Figure("scene", scene)], tmp_path / "png", scale=1)
    assert png_size(paths[0]) == (400, 300)
    assert sorted(p.name for p in (tmp_path / "png").iterdir()) == [
        "attention_example.png", "attention_mean.png", "scene.png"]


def test_missing_browser_is_one_line(tmp_path, monkeypatch):
    monkeypatch.setenv("BROWSER_PATH", str(tmp_path / "no-chrome"))
    with pytest.raises(ConfigError, match="BROWSER_PATH=.*no such file"):
        write_pngs([Figure("f", go.Figure())], tmp_path / "png")
    (tmp_path / "file").write_text("")
    monkeypatch.delenv("BROWSER_PATH")
    with pytest.raises(ConfigError, match="not a directory"):
        write_pngs([Figure("f", go.Figure())], tmp_path / "file")


class FlakyKaleido:
    """A stand-in for a Kaleido session: its first ``stale`` figures fail as kaleido 1.x's do when
    a tab answers from the blank page it had before the renderer loaded (seen under CPU load)."""

    def __init__(self, stale: int, error: str = "ReferenceError: kaleido_scopes is not defined"):
        self.stale, self.error, self.calls = stale, error, 0

    async def calc_fig(self, figure, opts):
        self.calls += 1
        if self.calls <= self.stale:
            raise RuntimeError(f"{{'result': {{'className': 'ReferenceError', "
                               f"'description': '{self.error}'}}}}")
        return b"png"


@pytest.mark.parametrize("stale, calls", [(0, 1), (1, 2), (2, 3)])
def test_a_figure_drawn_on_the_blank_page_is_drawn_again(stale, calls):
    k = FlakyKaleido(stale)
    assert asyncio.run(calc_fig(k, go.Figure(), {"format": "png"}, tries=3)) == b"png"
    assert k.calls == calls


def test_only_the_blank_page_error_is_tried_again_and_only_so_often():
    k = FlakyKaleido(5)
    with pytest.raises(RuntimeError, match="kaleido_scopes"):
        asyncio.run(calc_fig(k, go.Figure(), {"format": "png"}, tries=3))
    assert k.calls == 3
    other = FlakyKaleido(1, error="TypeError: layout is broken")
    with pytest.raises(RuntimeError, match="layout is broken"):
        asyncio.run(calc_fig(other, go.Figure(), {"format": "png"}, tries=3))
    assert other.calls == 1
