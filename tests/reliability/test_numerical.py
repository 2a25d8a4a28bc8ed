"""A configuration that diverges stops with a clear message and is recorded as failed."""

import json

from tests.conftest import run_cli


def test_huge_lr_stops_with_a_clear_message(tmp_path, tally):
    result = run_cli("train", "--set", "train.lr=1e4", "--set", "task.n_digits=20",
                     "--set", "train.max_steps=5000", "--out", str(tmp_path / "d"), "--quiet")
    tally["diverging runs stopped cleanly"] += 1
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "diverged: non-finite loss between steps 0 and 100" in result.stdout
    record = json.loads((tmp_path / "d" / "run.json").read_text())
    assert record["status"] == "failed" and record["stop_reason"] == "non_finite"
    assert record["step"] == 100  # stopped at the first evaluation, not at max_steps
