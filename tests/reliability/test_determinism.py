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


SAVE_TWICE = """
import sys, torch
from listcopy.checkpoint import save_tensors
tensors = {f"t{i}": torch.arange(i + 1, dtype=torch.float32) for i in range(12)}
save_tensors(sys.argv[1], tensors, {"step": 5, "config": {"b": 1, "a": 2}})
"""


def test_checkpoint_bytes_do_not_depend_on_the_process(tmp_path):
    """safetensors writes its header from a hash map seeded per process: the same tensors and
    metadata came out in different bytes. Several processes, one set of bytes, keys sorted."""
    import subprocess
    import sys

    paths = [tmp_path / f"{i}.safetensors" for i in range(4)]
    for path in paths:
        subprocess.run([sys.executable, "-c", SAVE_TWICE, str(path)], check=True, timeout=300)
    first = paths[0].read_bytes()
    assert all(p.read_bytes() == first for p in paths[1:])
    n = int.from_bytes(first[:8], "little")
    header = json.loads(first[8:8 + n])
    assert list(header) == sorted(header) and list(header["__metadata__"]) == ["listcopy", "sha256"]
    tensors, meta = load_tensors(paths[0])
    assert meta == {"step": 5, "config": {"b": 1, "a": 2}} and torch.equal(tensors["t3"],
                                                                        torch.arange(4.0))
