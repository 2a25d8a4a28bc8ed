"""One self-contained HTML page: plotly.js embedded once, every figure as inline JSON, no network.

    page = Page("listcopy report: 3layer_100dig_8d", subtitle="...")
    page.add(Section("attention", "Attention", "What is measured.", figures=[Figure("attn", fig)]))
    html = page.render()

The page loads nothing: plotly.js (from the installed plotly package), the CSS and every figure's
data are inline, so it opens from ``file://`` with the network off. Each figure's JSON lives in a
``<script type="application/json">`` element and one script at the end draws them all; the shared
plotly template is stored once, not in every figure. Tables are plain HTML.
"""

from __future__ import annotations

import html
import json
import re
from dataclasses import dataclass, field
from typing import Any, Sequence

TEMPLATE = "plotly_white"  # the seed notebook's template

CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; margin: 0;
       color: #222; background: #fafafa; }
header { background: #fff; border-bottom: 1px solid #ddd; padding: 1.2em 2em 0.6em; }
header h1 { margin: 0 0 0.2em; font-size: 1.6em; }
header .subtitle { color: #555; margin: 0 0 0.6em; }
nav { font-size: 0.9em; margin-bottom: 0.4em; }
nav a { margin-right: 1em; color: #1f5fa8; text-decoration: none; white-space: nowrap; }
main { padding: 0 2em 3em; max-width: 1500px; }
section { background: #fff; border: 1px solid #e2e2e2; border-radius: 6px; margin: 1.2em 0;
          padding: 0.6em 1.2em 1em; }
section h2 { font-size: 1.25em; margin: 0.4em 0; }
section p.what { margin: 0.2em 0 0.4em; max-width: 75em; }
section p.numbers { margin: 0.2em 0 0.6em; color: #444; font-size: 0.92em; max-width: 75em; }
.figure { width: 100%; margin: 0.4em 0; }
.tables { display: flex; flex-wrap: wrap; gap: 1.5em; align-items: flex-start; }
.table-wrap { max-height: 32em; overflow: auto; }
table { border-collapse: collapse; font-size: 0.85em; margin: 0.4em 0; }
caption { text-align: left; font-weight: 600; padding-bottom: 0.3em; }
th, td { border-bottom: 1px solid #e5e5e5; padding: 0.2em 0.7em; text-align: left; }
th { background: #f3f3f3; position: sticky; top: 0; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
tr.bad td { background: #fdecea; }
footer { color: #777; font-size: 0.8em; padding: 0 2em 2em; }
"""

RENDER_JS = """
(function () {
  var template = JSON.parse(document.getElementById("plotly-template").textContent);
  var config = {responsive: true, displaylogo: false,
                toImageButtonOptions: {format: "png", scale: 2}};
  document.querySelectorAll("script.figure-data").forEach(function (el) {
    var spec = JSON.parse(el.textContent);
    var layout = spec.layout || {};
    layout.template = template;
    var div = document.getElementById(el.getAttribute("data-target"));
    var t0 = performance.now();
    Plotly.newPlot(div, spec.data || [], layout, config).then(function () {
      div.setAttribute("data-render-ms", Math.round(performance.now() - t0));
      div.setAttribute("data-rendered", "1");
    });
  });
})();
"""


@dataclass
class Figure:
    """A plotly figure with an id (its PNG file name) on the page."""

    id: str
    figure: Any  # plotly.graph_objects.Figure


@dataclass
class Table:
    """A plain HTML table: ``columns`` and ``rows`` (dicts); ``bad`` marks rows to highlight."""

    columns: Sequence[str]
    rows: Sequence[dict[str, Any]]
    caption: str = ""
    headers: dict[str, str] = field(default_factory=dict)  # column -> header text
    bad: Sequence[bool] = ()
    formats: dict[str, str] = field(default_factory=dict)  # column -> format spec, e.g. ".4f"


@dataclass
class Section:
    id: str
    title: str
    what: str  # one or two sentences: what is measured
    numbers: str = ""  # a line of key numbers (plain text)
    figures: list[Figure] = field(default_factory=list)
    tables: list[Table] = field(default_factory=list)


@dataclass
class Page:
    title: str
    subtitle: str = ""
    sections: list[Section] = field(default_factory=list)
    footer: str = ""

    def add(self, section: Section) -> Section:
        if any(s.id == section.id for s in self.sections):
            raise ValueError(f"duplicate section id {section.id!r}")
        self.sections.append(section)
        return section

    @property
    def figures(self) -> list[Figure]:
        return [f for s in self.sections for f in s.figures]

    def render(self) -> str:
        ids = [f.id for f in self.figures]
        if len(set(ids)) != len(ids):
            raise ValueError("duplicate figure ids: " + ", ".join(sorted({i for i in ids if ids.count(i) > 1})))
        return render_page(self)


# ---- rendering ---------------------------------------------------------------------------------

def plotly_js() -> str:
    """The plotly.js bundle shipped inside the plotly package (no download)."""
    from plotly.offline import get_plotlyjs

    return get_plotlyjs()


def template_json() -> str:
    import plotly.io as pio

    return _script_safe(json.dumps(pio.templates[TEMPLATE].to_plotly_json(), separators=(",", ":")))


def figure_json(fig) -> str:
    """The figure as compact JSON, without its template (the page adds the shared one)."""
    spec = fig.to_plotly_json()
    layout = dict(spec.get("layout", {}))
    layout.pop("template", None)
    import plotly.io as pio

    text = pio.to_json({"data": spec.get("data", []), "layout": layout}, validate=False,
                       pretty=False, remove_uids=True)
    return _script_safe(text)


def _script_safe(text: str) -> str:
    """Text that cannot close the <script> element it sits in (``</`` -> ``<\\/``, valid in JSON)."""
    return text.replace("</", "<\\/").replace("<!--", "<\\!--")


def _js_safe(code: str) -> str:
    """JavaScript source that cannot close its <script> element (none does in plotly.js)."""
    return re.sub(r"</(script)", r"<\\/\1", code, flags=re.IGNORECASE)


def esc(text: Any) -> str:
    return html.escape(str(text), quote=True)


def cell(value: Any, fmt: str | None = None) -> tuple[str, bool]:
    """(text, is_number) for a table cell."""
    if value is None:
        return "-", False
    if isinstance(value, bool):
        return ("yes" if value else "no"), False
    if isinstance(value, (int, float)):
        if fmt:
            return format(value, fmt), True
        if isinstance(value, float):
            return f"{value:.6g}", True
        return str(value), True
    if isinstance(value, (list, tuple)):
        return "(" + ", ".join(str(v) for v in value) + ("," if len(value) == 1 else "") + ")", False
    return str(value), False


def render_table(t: Table) -> str:
    out = ['<div class="table-wrap"><table>']
    if t.caption:
        out.append(f"<caption>{esc(t.caption)}</caption>")
    out.append("<thead><tr>" + "".join(f"<th>{esc(t.headers.get(c, c))}</th>" for c in t.columns)
               + "</tr></thead><tbody>")
    for i, row in enumerate(t.rows):
        bad = i < len(t.bad) and t.bad[i]
        tds = []
        for c in t.columns:
            text, num = cell(row.get(c), t.formats.get(c))
            tds.append(f'<td class="num">{esc(text)}</td>' if num else f"<td>{esc(text)}</td>")
        out.append(('<tr class="bad">' if bad else "<tr>") + "".join(tds) + "</tr>")
    out.append("</tbody></table></div>")
    return "".join(out)


def render_section(s: Section) -> str:
    parts = [f'<section id="{esc(s.id)}" class="report-section">', f"<h2>{esc(s.title)}</h2>",
             f'<p class="what">{esc(s.what)}</p>']
    if s.numbers:
        parts.append(f'<p class="numbers">{esc(s.numbers)}</p>')
    if s.tables:
        parts.append('<div class="tables">' + "".join(render_table(t) for t in s.tables) + "</div>")
    for f in s.figures:
        div = f"fig-{f.id}"
        parts.append(f'<div class="figure" id="{esc(div)}" data-figure="{esc(f.id)}"></div>')
        parts.append(f'<script type="application/json" class="figure-data" data-target="{esc(div)}">'
                     f"{figure_json(f.figure)}</script>")
    parts.append("</section>")
    return "\n".join(parts)


def render_page(page: Page) -> str:
    nav = " ".join(f'<a href="#{esc(s.id)}">{esc(s.title)}</a>' for s in page.sections)
    body = "\n".join(render_section(s) for s in page.sections)
    return "\n".join([
        "<!DOCTYPE html>",
        '<html lang="en">',
        "<head>",
        '<meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{esc(page.title)}</title>",
        f"<style>{CSS}</style>",
        # as plotly.io.to_html: MathJax (never loaded here) would be looked for locally
        "<script>window.PlotlyConfig = {MathJaxConfig: 'local'};</script>",
        f"<script>{_js_safe(plotly_js())}</script>",
        "</head>",
        "<body>",
        f"<header><h1>{esc(page.title)}</h1>"
        + (f'<p class="subtitle">{esc(page.subtitle)}</p>' if page.subtitle else "")
        + f"<nav>{nav}</nav></header>",
        f"<main>\n{body}\n</main>",
        f"<footer>{esc(page.footer)}</footer>" if page.footer else "",
        f'<script type="application/json" id="plotly-template">{template_json()}</script>',
        f"<script>{RENDER_JS}</script>",
        "</body>",
        "</html>",
        "",
    ])
