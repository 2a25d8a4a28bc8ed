"""``listcopy ablate``: the command on the seed's checkpoint, its JSON, its one-line errors."""

import json
import os

import pytest

from listcopy.cli import main


def ablate(*argv):
    return main(["ablate", *argv])


def one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "Traceback" not in err, err
    return err


def test_the_issue_command(fixtures_dir, tmp_path, capsys):
    out = tmp_path / "a.json"
    assert ablate(str(fixtures_dir / "seed_default_1000.pt"), "--edges",
                  "0:4-3,0-0,1-0;1:0-0,1-0,2-0,2-1,4-3", "--json", str(out)) == 0
    r = json.loads(out.read_text())
    assert {"acc", "seq_acc", "per_position_acc", "errors"} <= set(r)
    assert set(r["errors"]) == {"o1", "o2"} and r["renorm"] is True
    assert set(r["errors"]["o2"]) == {"wrong", "n_wrong", "eq_prev_pred", "eq_d1", "eq_d2"}
    printed = capsys.readouterr().out
    assert printed.startswith("edges 0:4-3,0-0,1-0;1:0-0,1-0,2-0,2-1,4-3 (renormalised): acc")
    assert "  o2: wrong" in printed


def test_no_renorm_to_stdout(fixtures_dir, capsys):
    assert ablate(str(fixtures_dir / "seed_default_1000.pt"), "--edges", "2:4-3", "--no-renorm",
                  "--json", "-") == 0
    r = json.loads(capsys.readouterr().out)
    assert r["renorm"] is False and r["edges"] == "2:4-3"


@pytest.mark.parametrize("edges, words", [
    ("3:4-3", "layer '3'"), ("0:5-0", "query '5'"), ("nonsense", "expected LAYER:Q-K"),
    ("0:4-3,0-4", "edge 0:0-4: the mask keeps query 0 from key 4 in layer 0"),  # causal
    ("1:3-1", "edge 1:3-1: the mask keeps query 3 from key 1"),  # an output, an input
])
def test_bad_edges(fixtures_dir, tmp_path, capsys, edges, words):
    out = tmp_path / "a.json"
    assert ablate(str(fixtures_dir / "seed_default_1000.pt"), "--edges", edges, "--json",
                  str(out)) == 2
    assert words in one_line_error(capsys)
    assert not out.exists()


def test_missing_model(tmp_path, capsys):
    assert ablate(str(tmp_path / "nothing"), "--edges", "0:1-0") == 2
    assert "nothing" in one_line_error(capsys)


@pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="needs /proc (no new files there)")
def test_an_unwritable_json_is_refused_before_any_work(fixtures_dir, capsys):
    assert ablate(str(fixtures_dir / "seed_default_1000.pt"), "--edges", "2:4-3", "--json",
                  "/proc/x.json") == 2
    captured = capsys.readouterr()
    assert captured.out == "" and "Traceback" not in captured.err, captured  # nothing computed
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and "--json /proc/x.json: cannot create files in /proc" in lines[0]
