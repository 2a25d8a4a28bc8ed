"""Acceptance: the reports open in a real browser (Debian's headless Chromium) from file:// with
the network off; no console errors, no request off the machine, every figure drawn as SVG, the
title and every section there. Screenshots go to test-artifacts/report/."""

from __future__ import annotations

import os

import pytest

from listcopy.report import model_report, sweep_report
from listcopy.report.model_page import SECTIONS

from . import browser as B


@pytest.fixture(scope="module")
def chromium():
    reason = B.available()
    if reason:
        if os.environ.get("CI"):
            pytest.fail(f"browser test cannot run in CI: {reason}")
        pytest.skip(reason)
    with B.chromium() as driver:
        yield driver


def check_page(driver, path, title: str, sections, n_figures: int, screenshot):
    loaded = B.load_offline(driver, path)
    errors = [e for e in loaded["console"] if e["level"] == "SEVERE"]
    assert errors == [], errors
    assert B.network_requests(loaded["requests"]) == []
    page_requests = [u for u in loaded["requests"]
                     if not u.startswith(("chrome:", "chrome-extension:", "about:", "devtools:"))]
    assert path.resolve().as_uri() in page_requests
    assert all(u.startswith(B.PAGE_SCHEMES) for u in page_requests), page_requests

    assert driver.title == title
    assert driver.execute_script("return document.querySelector('header h1').textContent") == title
    found = driver.execute_script("""
        return Array.from(document.querySelectorAll('section.report-section')).map(s => [
            s.id, s.querySelector('h2').textContent, s.querySelector('p.what').textContent]);""")
    assert [s[0] for s in found] == list(sections)
    assert all(h2 and len(what) > 40 for _, h2, what in found)

    figures = driver.execute_script("""
        return Array.from(document.querySelectorAll('.figure')).map(d => [
            d.id, d.getAttribute('data-rendered'), d.querySelectorAll('svg.main-svg').length,
            d.getBoundingClientRect().height]);""")
    assert len(figures) == n_figures
    for fid, rendered, svgs, height in figures:
        assert rendered == "1" and svgs >= 1 and height > 100, (fid, rendered, svgs, height)
    shot = B.full_page_screenshot(driver, screenshot)
    assert shot.stat().st_size > 50_000


def test_model_report_in_the_browser(chromium, default_model, default_analysis, tmp_path,
                                     artifacts):
    out = tmp_path / "model.html"
    info = model_report(default_model, out, progress=False, analysis=default_analysis)
    assert info.bytes < 10_000_000
    check_page(chromium, out, "listcopy report: 3layer_100dig_8d", SECTIONS, len(info.figures),
               artifacts / "model_report.png")
    # every figure of every analysis, UMAP included: 15 of the seed's studies, 8 of the paper's
    assert len(info.figures) == 15 + 8


def test_sweep_report_in_the_browser(chromium, sweep_dir, tmp_path, artifacts):
    out = tmp_path / "sweep.html"
    info = sweep_report(sweep_dir, out, progress=False)
    check_page(chromium, out, "listcopy sweep report: grid", info.sections, 3,
               artifacts / "sweep_report.png")
