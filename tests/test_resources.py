"""Resource guards: what a configuration needs (against the model itself and a measured peak),
what the machine has, and the commands refusing what cannot fit (one line, exit 2, nothing
written) before they allocate anything."""

import subprocess
import sys
from pathlib import Path

import pytest

from listcopy import cli, resources
from listcopy.config import Config
from listcopy.model import ListCopyTransformer
from listcopy.resources import Limits, TooLarge, n_parameters, training_need


def main_in(tmp_path, monkeypatch, capsys, *argv):
    """``listcopy ARGV`` in-process, in ``tmp_path``: (exit status, stderr lines, files left)."""
    monkeypatch.chdir(tmp_path)
    code = cli.main(list(argv))
    err = capsys.readouterr().err.strip().splitlines()
    return code, err, sorted(p.name for p in tmp_path.iterdir())


def refused(tmp_path, monkeypatch, capsys, *argv, needle=""):
    code, err, left = main_in(tmp_path, monkeypatch, capsys, *argv)
    assert code == 2, (code, err)
    assert len(err) == 1 and "Traceback" not in err[0] and needle in err[0], err
    assert left == [], left  # nothing written
    return err[0]


@pytest.mark.parametrize("sets", [[], ["model.ln=true", "model.use_bias=true"],
                                  ["model.n_heads=4", "model.d_model=16", "task.list_len=3"],
                                  ["task.n_digits=7", "model.n_layers=1", "model.d_model=5"]])
def test_parameter_count_is_the_models(sets):
    config = Config().override(sets)
    model = ListCopyTransformer(config)
    assert n_parameters(config) == sum(p.numel() for p in model.parameters())


def test_available_memory_is_read_from_the_machine():
    total = next(int(line.split()[1]) * 1024 for line in Path("/proc/meminfo").read_text().splitlines()
                 if line.startswith("MemTotal:"))
    assert 0 < resources.available_memory() <= total


PEAK = """
import sys, torch
from listcopy.config import Config
from listcopy.training import train_ensemble


def status(key):
    line = next(ln for ln in open("/proc/self/status") if ln.startswith(key))
    return int(line.split()[1]) * 1024


torch.set_num_threads(1)
E, sets = int(sys.argv[1]), sys.argv[2:]
# the peak so far is from the imports (higher on a fresh venv, which writes its .pyc files): reset
# it (Linux: 5 > clear_refs sets VmHWM to VmRSS) and measure what training adds to what is resident
open("/proc/self/clear_refs", "w").write("5")
base = status("VmRSS")
c = Config().override(sets + ["train.max_steps=20", "train.eval_every=10"])
train_ensemble([c.override([f"train.seed={s}"]) for s in range(E)], progress=False)
print(status("VmHWM") - base)
"""


@pytest.fixture(scope="module")
def warm_imports():
    """One short run first: on a fresh venv the first imports write their .pyc files (and the
    kernel may build), which would count as training's memory in the measured run."""
    subprocess.run([sys.executable, "-c", PEAK, "1"], capture_output=True, timeout=600)


@pytest.mark.slow
@pytest.mark.parametrize("members, sets", [
    (8, ["model.d_model=128"]),                                     # wide (the kernel, since it takes d128)
    (600, []),                                                      # the C kernel, many members
    (2, ["task.n_digits=20000", "task.list_len=1", "model.d_model=32"]),  # a large vocabulary
])
def test_the_estimate_is_close_to_the_measured_peak(members, sets, warm_imports):
    """The guard must not let through what needs far more than it says, nor refuse what fits:
    its estimate against the peak resident memory of a real (short) run in a fresh process."""
    out = subprocess.run([sys.executable, "-c", PEAK, str(members), *sets], capture_output=True,
                         text=True, timeout=600)
    assert out.returncode == 0, out.stderr
    measured = int(out.stdout.split()[-1])
    estimate = training_need(Config().override(sets + ["train.max_steps=20"]), members).total
    assert measured <= 2 * estimate + 50e6, (measured, estimate)
    # the estimate counts the torch path's autograd activations; the C kernel (which now trains all
    # three cases) keeps far fewer: over-estimating by up to 8x still refuses nothing that fits
    assert estimate <= 8 * measured + 50e6, (measured, estimate)


@pytest.mark.parametrize("sets, needle", [
    (["task.n_digits=99999999999"], "needs about 54.4 TB (parameters 54.4 TB)"),
    (["model.d_model=100000000"], "needs about 3840.0 PB"),
    (["model.n_layers=100000000"], "model.n_layers = 100000000: at most 64 unless --allow-large"),
    (["model.n_layers=10000"], "model.n_layers = 10000: at most 64"),
    (["task.list_len=64", "task.n_samples=1000000", "model.d_model=1000"], "needs about"),
    (["task.n_digits=100000", "train.batch_size=1000000", "model.d_model=128"], "training step"),
])
def test_train_refuses_what_cannot_fit_before_anything(tmp_path, monkeypatch, capsys, sets, needle):
    args = [a for s in sets for a in ("--set", s)]
    line = refused(tmp_path, monkeypatch, capsys, "train", *args, "--quiet", needle=needle)
    assert "of RAM available" in line or "--allow-large" in line


def test_seeds_that_do_not_fit_create_no_run_folder(tmp_path, monkeypatch, capsys):
    """``--seeds 0-99999`` once made 59,922 empty run folders before it ran out of memory."""
    monkeypatch.setattr(resources, "available_memory", lambda: 4 * 10**9)
    line = refused(tmp_path, monkeypatch, capsys, "train", "--seeds", "0-99999", "--quiet",
                   needle="100,000 x 3layer_100dig_8d at once: needs about")
    assert "4.0 GB of RAM available" in line


def test_allow_large_lifts_the_layer_limit_but_not_memory(tmp_path, monkeypatch, capsys):
    code, err, left = main_in(tmp_path, monkeypatch, capsys, "train", "--allow-large", "--quiet",
                              "--set", "model.n_layers=65", "--set", "task.n_digits=4",
                              "--set", "model.d_model=2", "--set", "train.max_steps=1",
                              "--out", "r")
    assert code in (0, 1) and err == [], err  # trained (65 identity layers may diverge: exit 1)
    assert left == ["r"] and (tmp_path / "r" / "run.json").is_file()
    (tmp_path / "empty").mkdir()
    refused(tmp_path / "empty", monkeypatch, capsys, "train", "--allow-large", "--set",
            "model.n_layers=100000000", "--out", "big", needle="needs about")


def test_policy_limits():
    assert Limits.of(True) == Limits(None, None, None)
    assert Limits().max_layers == 64 and Limits().max_seeds == 100_000
    assert Limits().max_entries == 1_000_000


def test_memory_is_checked_against_the_available(monkeypatch):
    need = training_need(Config(), 1000)
    monkeypatch.setattr(resources, "available_memory", lambda: need.total - 1)
    with pytest.raises(TooLarge, match="needs about"):
        resources.check_memory(need, "x")
    monkeypatch.setattr(resources, "available_memory", lambda: need.total)
    resources.check_memory(need, "x")


@pytest.mark.parametrize("argv, needle", [
    (["train", "--set", "train.device=cuda:abc"], "train.device = 'cuda:abc': must be one of"),
    (["train", "--set", "train.device=mps"], "train.device = 'mps': not on this machine"),
    (["train", "--set", "train.device=cuda"], "train.device = 'cuda': not on this machine"),
    (["train", "--set", "train.device=cuda:7"], "train.device = 'cuda:7': not on this machine"),
    (["bench", "--device", "cuda"], "--device 'cuda': not on this machine"),
])
def test_devices_this_machine_lacks_are_one_line(tmp_path, monkeypatch, capsys, argv, needle):
    have = resources.available_devices()
    if any(d.startswith("cuda") for d in have) and "cuda" in " ".join(argv[1:]) \
            and "abc" not in argv[-1] and "cuda:7" not in argv[-1]:
        pytest.skip("this machine has a GPU")
    line = refused(tmp_path, monkeypatch, capsys, *argv, "--quiet" if argv[0] == "train" else
                   "--json", needle=needle)
    if "not on this machine" in needle:
        assert "available: cpu" in line


@pytest.mark.parametrize("argv", [["train", "--quiet"], ["analyze", "x.pt"], ["bench"],
                                  ["sweep", "g.toml", "--dry-run"]])
def test_threads_above_a_sane_bound_are_refused(tmp_path, monkeypatch, capsys, argv):
    (tmp_path / "g.toml").write_text("")
    monkeypatch.chdir(tmp_path)
    code = cli.main([*argv, "--threads", "100000"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "--threads 100000: at most" in err[0], err


@pytest.mark.parametrize("error", [
    MemoryError(),
    RuntimeError("[enforce fail at alloc_cpu.cpp:127] err == 0. DefaultCPUAllocator: can't "
                 "allocate memory: you tried to allocate 3200000000000 bytes.\nmore"),
    RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB"),
])
def test_a_failed_allocation_is_one_line(monkeypatch, capsys, error):
    from listcopy.cli import model

    def explode(args):
        raise error

    monkeypatch.setattr(model, "cmd_info", explode)
    code = cli.main(["info", "x"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1 and len(err) == 1 and err[0].startswith("listcopy info: error: out of memory")


def test_other_runtime_errors_still_propagate(monkeypatch):
    from listcopy.cli import model

    monkeypatch.setattr(model, "cmd_info", lambda args: (_ for _ in ()).throw(RuntimeError("bug")))
    with pytest.raises(RuntimeError, match="bug"):
        cli.main(["info", "x"])


def test_resource_module_never_imports_torch_at_import_time():
    code = ("import sys; import listcopy.resources; print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.stdout.strip() == "False", out.stderr


@pytest.mark.parametrize("members, device, batch, lists", [
    (1, "cpu", 128, 1 << 17), (8192, "cpu", 128, 16), (10**6, "cpu", 128, 1),
    (8192, "cuda", 128, 128), (8192, "mps", 32, 32), (64, "cuda", 128, 2048)])
def test_evaluation_chunks_are_cache_sized_on_the_cpu_and_a_batch_at_least_elsewhere(
        members, device, batch, lists):
    assert resources.eval_chunk(members, device, batch) == lists


def test_the_estimate_counts_the_accelerators_larger_evaluation_chunk():
    config = Config().override(["model.use_bias=true"])  # the torch path on the CPU too
    part = {d: dict(training_need(config, 8192, d).parts)["evaluation"] for d in ("cpu", "cuda")}
    assert part["cuda"] == 8 * part["cpu"]  # 128 lists per pass instead of 16
