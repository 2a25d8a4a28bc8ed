"""``listcopy report``: a model or a sweep in, one line out; bad input: one line, exit 2."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from listcopy.cli import main


def report_command() -> list[str]:
    """The real ``listcopy`` command (the console script, or ``python -m listcopy.cli``)."""
    exe = Path(sys.executable).with_name("listcopy")
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "listcopy.cli"]


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*report_command(), "report", *args], capture_output=True, text=True,
                          timeout=900, env={**os.environ, "PYTHONUNBUFFERED": "1"})


def test_model_and_sweep_reports(tiny_run, sweep_dir, tmp_path, capsys):
    assert main(["report", str(tiny_run), "--out", str(tmp_path / "m.html"), "--no-umap",
                 "--only", "attention,edges", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"wrote {tmp_path / 'm.html'} (") and "3 sections, 4 figures" in out  # + the training curve
    assert main(["report", str(sweep_dir), "--out", str(tmp_path / "s.html"), "--axes",
                 "n_layers,d_model", "--quiet"]) == 0
    assert "4 sections, 3 figures" in capsys.readouterr().out
    text = (tmp_path / "s.html").read_text()
    assert "model.d_model (rows)" in text and "model.n_layers (columns)" in text


def test_model_report_on_the_first_validation_lists(tiny_run, tmp_path, capsys):
    out = tmp_path / "m.html"
    assert main(["report", str(tiny_run), "--out", str(out), "--only", "attention",
                 "--val-rows", "7", "--quiet"]) == 0  # of its 20
    assert "on 7 lists</p>" in out.read_text()  # the subtitle's validation metrics


def test_default_output_paths(tmp_path):
    from listcopy.report.cli import default_out

    assert default_out(tmp_path) == tmp_path / "report.html"
    assert default_out(tmp_path / "m.pt") == tmp_path / "m.html"


@pytest.mark.parametrize("args, needle", [
    (["{sweep}", "--axes", "model.d_model,nope"], "'nope': not a setting"),
    (["{sweep}", "--set", "train.lr=0.1"], "--set applies to a model report"),
    (["{run}", "--axes", "d_model,n_layers"], "--axes applies to a sweep directory"),
    (["{missing}"], "no such run directory or checkpoint file"),
    (["{run}", "--only", "nope"], "unknown analysis 'nope'"),
    (["{sweep}", "--val-rows", "100"], "--val-rows applies to a model report"),
    (["{run}", "--val-rows", "0"], "--val-rows 0: must be >= 1"),
])
def test_bad_input_is_one_line(tiny_run, sweep_dir, tmp_path, capsys, args, needle):
    args = [a.format(sweep=sweep_dir, run=tiny_run, missing=tmp_path / "nope") for a in args]
    assert main(["report", *args, "--out", str(tmp_path / "x.html"), "--quiet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and needle in err[0], err
    assert not (tmp_path / "x.html").exists()


def test_real_command_exits_2_with_one_line(sweep_dir, tmp_path):
    result = run(str(sweep_dir), "--axes", "d_model", "--out", str(tmp_path / "x.html"))
    assert result.returncode == 2, (result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "two different keys" in lines[0] and "Traceback" not in lines[0]


def test_a_png_folder_that_cannot_be_made_is_refused_before_the_html(tiny_run, tmp_path, capsys):
    a_file = tmp_path / "afile"
    a_file.write_text("a file")
    bad = [(a_file / "sub", "afile is not a directory")]
    if os.path.isdir("/proc/self"):  # no new files there
        bad.append((Path("/proc/pngs"), "--png /proc/pngs: cannot create files in /proc"))
    for png, needle in bad:
        assert main(["report", str(tiny_run), "--out", str(tmp_path / "x.html"), "--png",
                     str(png), "--only", "parameters", "--quiet"]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and needle in err[0] and "Traceback" not in err[0], err
        assert not (tmp_path / "x.html").exists() and not png.exists()
