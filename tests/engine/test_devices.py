"""``train.device = "auto"``: the device that trains the job fastest, from devices.py's table of
crossovers (hand-checked cases), and what it says."""

import pytest
import torch

from listcopy import devices
from listcopy.config import Config

from .helpers import needs_kernel


def job(d_model=8, device="auto"):
    return Config().override([f"model.d_model={d_model}", f"train.device={device}"])


def test_asked_for_is_what_you_get():
    choice = devices.choose(job(device="cpu"), 10_000, found=["cuda"])
    assert choice.device == torch.device("cpu") and choice.why == "train.device = cpu"
    assert devices.choose(job(device="cuda"), 1, found=[]).device == torch.device("cuda")


def test_without_an_accelerator_the_cpu():
    choice = devices.choose(job(), 4096, found=[], kernel=True)
    assert choice.device.type == "cpu" and choice.why == "no GPU; the CPU kernel"
    assert devices.choose(job(), 1, found=[], kernel=False).why == "no GPU; torch on the CPU"


def test_one_default_model_trains_on_the_cpu_even_beside_a_gpu():
    """The issue's case: `listcopy train` on a machine with a GPU (27 min there, 20 s here)."""
    choice = devices.choose(job(), 1, found=["cuda"], threads=1, kernel=True)
    assert choice.device.type == "cpu"
    line = choice.line()
    assert "\n" not in line and "cuda" in line and "below 11" in line
    assert "train.device=cuda" in line


@pytest.mark.parametrize("d_model,threads,kernel,members,device", [
    (8, 1, True, 10, "cpu"), (8, 1, True, 11, "cuda"),       # the H200's crossover (graphs)
    (8, 2, True, 21, "cpu"), (8, 2, True, 22, "cuda"),       # two CPU threads: twice as many
    (8, 1, False, 1, "cuda"),                                # no kernel: torch on the CPU loses
    (16, 1, True, 1, "cpu"), (16, 1, True, 2, "cuda"),       # between rows: the wider row's
    (32, 1, True, 1, "cpu"), (32, 1, True, 2, "cuda"),
    (64, 1, True, 1, "cpu"), (64, 2, True, 3, "cpu"), (64, 2, True, 4, "cuda"),  # a tie: the CPU
    (128, 1, True, 1, "cuda"), (512, 1, True, 1, "cuda"),
])
def test_the_crossover_by_width_threads_and_kernel(d_model, threads, kernel, members, device):
    choice = devices.choose(job(d_model), members, found=["cuda"], threads=threads, kernel=kernel)
    assert choice.device.type == device, choice.why


def test_the_table_is_one_row_per_accelerator_and_width_and_falls_with_width():
    for kind in ("cuda", "mps"):
        rows = [r for r in devices.CROSSOVERS if r.kind == kind]
        assert [r.widest for r in rows] == sorted({r.widest for r in rows})
        assert all(a.kernel >= b.kernel and a.torch >= b.torch for a, b in zip(rows, rows[1:]))
        assert all(r.torch <= r.kernel for r in rows)  # the CPU kernel holds out longer


def test_mps_keeps_the_eager_gpu_rows():
    """No graphs on mps: its steps are eager, launch-bound, as cuda's were before them."""
    assert devices.choose(job(), 127, found=["mps"], threads=1, kernel=True).device.type == "cpu"
    assert devices.choose(job(), 128, found=["mps"], threads=1, kernel=True).device.type == "mps"
    assert devices.choose(job(), 4, found=["mps"], threads=1, kernel=False).device.type == "mps"
    assert devices.choose(job(), 3, found=["mps"], threads=1, kernel=False).device.type == "cpu"


def test_another_table_overrides():
    mine = (devices.Crossover("cuda", 1 << 30, 1, 1, "my GPU"),)
    choice = devices.choose(job(), 1, found=["cuda"], threads=1, kernel=True, crossovers=mine)
    assert choice.device.type == "cuda" and "my GPU" in choice.why
    none = devices.choose(job(), 10**6, found=["mps"], threads=1, kernel=True, crossovers=mine)
    assert none.device.type == "cpu" and "no mps crossover" in none.why


def test_this_machine():
    """What "auto" resolves to here: the first accelerator torch finds, or the CPU."""
    choice = devices.choose(job(), 1)
    found = devices.accelerators()
    assert choice.device.type in ("cpu", *found)
    if not found:
        assert choice.device.type == "cpu" and choice.why.startswith("no GPU")
    assert 1 <= devices.cpu_threads() <= torch.get_num_threads()


def test_the_kernel_counts_only_where_it_loads(tmp_path, monkeypatch):
    """``kernel_trains`` asks the kernel to load, not whether a compiler's name is on PATH: a
    compiler that fails means torch; a cached build means the kernel, even with no compiler."""
    from listcopy.engine import kernel_build

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.setattr(kernel_build, "_loaded", {})
    broken = tmp_path / "cc-that-fails"
    broken.write_text("#!/bin/sh\nexit 1\n")
    broken.chmod(0o755)
    monkeypatch.setenv("CC", str(broken))
    assert not devices.kernel_trains(job())
    assert devices.choose(job(), 1, found=[]).why == "no GPU; torch on the CPU"


@needs_kernel
def test_a_cached_kernel_trains_without_a_compiler(tmp_path, monkeypatch):
    from listcopy.engine import kernel_build

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.delenv("CC", raising=False)
    monkeypatch.setattr(kernel_build, "_loaded", {})
    assert devices.kernel_trains(job())  # built here, into the empty cache
    monkeypatch.setattr(kernel_build, "_loaded", {})
    monkeypatch.setenv("PATH", str(tmp_path / "no-compilers-here"))
    assert devices.kernel_trains(job())
    assert devices.choose(job(), 1, found=[]).why == "no GPU; the CPU kernel"
