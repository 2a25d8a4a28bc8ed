"""Reports: the analyses of a model, or the results of a sweep, as one offline HTML page.

    html.py          the page: sections, tables, figures as inline JSON, plotly.js embedded once
    figures.py       one plotly figure per analysis, from the analysis's JSON
    model_page.py    a model's page: the table of sections (analysis key -> builder), ``build_page``
    model_report.py  ``model_report``: load and analyse a model, then write its page
    sweep_report.py  ``sweep_report``: a sweep's tables, accuracy heatmap, seeds, steps (a table
                     of section builders too)
    frontier.py      the capacity frontier's section of a sweep report
    output.py        what every report shares: progress stages, ``ReportInfo``, atomic writing
    png.py           every figure as a PNG through kaleido and the system's Chromium
    cli.py           ``listcopy report PATH [--out FILE.html] [--png DIR] [--axes A,B]``

    >>> from listcopy.report import model_report, sweep_report
    >>> model_report("runs/3layer_100dig_8d", "report.html")
    >>> sweep_report("sweeps/seed_grid", "sweep.html", axes=("model.d_model", "model.n_layers"))

Importing this package is cheap: plotly, torch, kaleido and the analyses load on first use.
"""

from .html import Figure, Page, Section, Table
from .model_page import build_page
from .model_report import model_report
from .output import ReportInfo
from .png import write_pngs
from .sweep_report import sweep_report

__all__ = ["Figure", "Page", "Section", "Table", "ReportInfo", "build_page", "model_report",
           "write_pngs", "sweep_report"]
