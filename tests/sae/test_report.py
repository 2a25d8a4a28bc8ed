"""The report's SAE section: ``listcopy report MODEL --sae DIR`` (``model_report(..., sae=DIR)``).

The section's numbers come from ``analyze_sae`` of the same SAE on the same model (compared here
with the ``listcopy sae analyze`` result); every figure is in the HTML and, where Debian's
headless Chromium is there, drawn in the browser offline.
"""

import os
from html import escape

import pytest

from listcopy.cli import main
from listcopy.report import model_report
from listcopy.sae import analyze_sae

SAE_FIGURES = ["sae_accuracy", "sae_alignment", "sae_alpha", "sae_swaps", "sae_steering"]


@pytest.fixture(scope="module")
def sae_report(model_dir, sae_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("report") / "model.html"
    info = model_report(model_dir, out, progress=False, only="attention", sae=sae_dir)
    return out, info


def test_the_sae_section_has_its_figures_and_the_analysis_numbers(sae_report, model_dir, sae_dir):
    out, info = sae_report
    assert info.sections == ["overview", "attention", "sae"]
    assert [f for f in info.figures if f.startswith("sae_")] == SAE_FIGURES
    html = out.read_text()
    assert 'id="sae"' in html and "Sparse autoencoder" in html
    for fid in SAE_FIGURES:
        assert f'data-figure="{fid}"' in html, fid
    result = analyze_sae(sae_dir, model_dir, device="cpu")
    m = result["metrics"]
    assert escape(f"acc {m['baseline_acc']:.4f} -> patched {m['patched_acc']:.4f}") in html
    a = result["alignment"]
    assert escape(f"alignment: {a['n_aligned']} of {a['n_alive']} alive latents") in html


def test_report_sae_via_the_cli(model_dir, sae_dir, tmp_path, capsys):
    out = tmp_path / "r.html"
    assert main(["report", str(model_dir), "--only", "attention", "--sae", str(sae_dir),
                 "--out", str(out), "--quiet"]) == 0
    assert "3 sections" in capsys.readouterr().out and 'data-figure="sae_steering"' in out.read_text()


def test_report_sae_errors_are_one_line(model_dir, tmp_path, capsys):
    assert main(["report", str(model_dir), "--only", "attention", "--sae",
                 str(tmp_path / "missing"), "--out", str(tmp_path / "r.html"), "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "no such SAE directory" in err, err
    assert not (tmp_path / "r.html").exists()
    sweep = tmp_path / "sweep"
    sweep.mkdir()
    (sweep / "sweep.db").write_bytes(b"")
    assert main(["report", str(sweep), "--sae", str(tmp_path)]) == 2
    assert "--sae applies to a model report" in capsys.readouterr().err


def test_the_sae_section_in_the_browser(sae_report, model_dir, tmp_path):
    from tests.report import browser as B
    from tests.report.test_browser import check_page

    reason = B.available()
    if reason:
        if os.environ.get("CI"):
            pytest.fail(f"browser test cannot run in CI: {reason}")
        pytest.skip(reason)
    from listcopy.checkpoint import load

    out, info = sae_report
    title = f"listcopy report: {load(model_dir)[1].name}"
    with B.chromium() as driver:
        check_page(driver, out, title, info.sections, len(info.figures),
                   tmp_path / "sae_report.png")
    # the training curve, the attention section's two, the SAE section's five
    assert len(info.figures) == 3 + len(SAE_FIGURES)
