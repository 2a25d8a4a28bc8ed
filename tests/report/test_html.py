"""The page itself: plotly.js embedded once, nothing fetched, data embedded safely."""

from __future__ import annotations

import json
from html.parser import HTMLParser

import plotly.graph_objects as go
import pytest

from listcopy.report.html import Figure, Page, Section, Table, render_table


class Elements(HTMLParser):
    """Every start tag with its attributes, and the text of each <script> element."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict]] = []
        self.scripts: list[tuple[dict, str]] = []
        self._script: dict | None = None
        self._text: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))
        if tag == "script":
            self._script, self._text = dict(attrs), []

    def handle_data(self, data):
        if self._script is not None:
            self._text.append(data)

    def handle_endtag(self, tag):
        if tag == "script" and self._script is not None:
            self.scripts.append((self._script, "".join(self._text)))
            self._script = None


def parse(text: str) -> Elements:
    p = Elements()
    p.feed(text)
    p.close()
    return p


def external_sources(text: str) -> list[str]:
    """src / href of scripts, stylesheets, images, frames and links that point off the machine."""
    out = []
    for tag, attrs in parse(text).tags:
        for key in ("src", "href", "data"):
            value = (attrs.get(key) or "").strip().lower()
            if value.startswith(("http:", "https:", "//")) and tag in (
                    "script", "link", "img", "iframe", "object", "embed", "source", "audio",
                    "video"):
                out.append(f"<{tag} {key}={attrs.get(key)}>")
    return out


def small_page(title: str = "a page") -> Page:
    page = Page(title=title, subtitle="sub")
    s = page.add(Section("one", "Section one", "What is measured."))
    s.figures.append(Figure("bars", go.Figure(go.Bar(x=["a", "b"], y=[1, 2]))))
    s.tables.append(Table(["x", "y"], [{"x": 1, "y": 0.5}], caption="t"))
    page.add(Section("two", "Section two", "More.", numbers="1 of 2"))
    return page


def test_plotly_js_is_embedded_once_and_nothing_is_fetched():
    text = small_page().render()
    p = parse(text)
    banners = text.count("* plotly.js v")
    assert banners == 1
    assert [a for t, a in p.tags if t == "script" and a.get("src")] == []
    assert [a for t, a in p.tags if t == "link"] == []
    assert external_sources(text) == []
    assert "<title>a page</title>" in text


def test_figures_round_trip_through_the_page():
    fig = go.Figure(go.Heatmap(z=[[0.0, 0.25], [0.5, 1.0]], zmin=0, zmax=1))
    page = Page("t")
    page.add(Section("s", "S", "w", figures=[Figure("heat", fig)]))
    p = parse(page.render())
    data = [json.loads(text) for attrs, text in p.scripts if attrs.get("class") == "figure-data"]
    assert len(data) == 1
    assert data[0]["data"][0]["z"] == [[0.0, 0.25], [0.5, 1.0]]
    assert "template" not in data[0]["layout"]  # stored once for the page
    template = [t for a, t in p.scripts if a.get("id") == "plotly-template"]
    assert len(template) == 1 and "layout" in json.loads(template[0])


def test_hostile_text_cannot_break_out_of_its_element():
    evil = "</script><script>alert(1)</script><!-- & \"'"
    fig = go.Figure(go.Scatter(x=[1], y=[1], text=[evil]))
    fig.update_layout(title_text=evil)
    page = Page(title=evil, subtitle=evil)
    s = page.add(Section("s", evil, evil, numbers=evil, figures=[Figure("f", fig)]))
    s.tables.append(Table(["c"], [{"c": evil}], caption=evil))
    text = page.render()
    p = parse(text)
    # the only scripts are ours: the config, plotly.js, the template, the figure, the renderer
    assert len(p.scripts) == 5
    assert "alert(1)" not in "".join(t for a, t in p.scripts if a.get("class") != "figure-data")
    spec = json.loads(next(t for a, t in p.scripts if a.get("class") == "figure-data"))
    assert spec["layout"]["title"]["text"] == evil
    assert spec["data"][0]["text"] == [evil]


def test_duplicate_ids_are_refused():
    page = small_page()
    with pytest.raises(ValueError, match="duplicate section"):
        page.add(Section("one", "again", "w"))
    page.sections[1].figures.append(Figure("bars", go.Figure()))
    with pytest.raises(ValueError, match="duplicate figure ids: bars"):
        page.render()


def test_table_cells():
    html = render_table(Table(["a", "b", "c", "d"], [{"a": 0.123456789, "b": True, "c": None,
                                                     "d": (3,)}, {"a": 2}],
                              formats={"a": ".3f"}, bad=[True, False]))
    assert '<td class="num">0.123</td>' in html
    assert "<td>yes</td>" in html and "<td>-</td>" in html and "<td>(3,)</td>" in html
    assert '<tr class="bad">' in html and '<td class="num">2.000</td>' in html
