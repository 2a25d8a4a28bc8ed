"""The same command twice gives bit-identical weights and metrics on the CPU."""

import json

import torch

from listcopy.checkpoint import MODEL_FILE, load_tensors
from tests.conftest import run_cli

ARGS = ["train", "--set", "task.n_digits=20", "--set", "train.batch_size=32", "--set",
        "train.max_steps=150", "--set", "train.eval_every=50", "--seeds", "0,5", "--quiet"]


def test_same_command_twice_is_bit_identical(tmp_path, tally):
    for name in ("a", "b"):
        result = run_cli(*ARGS, "--out", str(tmp_path / name))
        assert result.returncode == 0, result.stderr
    for seed in (0, 5):
        a, _ = load_tensors(tmp_path / "a" / f"seed-{seed}" / MODEL_FILE)
        b, _ = load_tensors(tmp_path / "b" / f"seed-{seed}" / MODEL_FILE)
        assert all(torch.equal(a[k], b[k]) for k in a)
        ha = json.loads((tmp_path / "a" / f"seed-{seed}" / "run.json").read_text())["history"]
        hb = json.loads((tmp_path / "b" / f"seed-{seed}" / "run.json").read_text())["history"]
        assert ha == hb
    tally["determinism checks (same command twice)"] += 2
