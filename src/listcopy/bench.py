"""``listcopy bench``: the notebook's training loop against the engine, in one process and one sitting.

    (a) notebook   the seed's loop: DataLoader + itertools.cycle, the hooked model, torch AdamW,
                   validation accuracy (a DataLoader of 256, ``.item()`` per batch) every 100 steps;
                   on an accelerator each batch is moved to it, as the seed does (``.to(DEV)``)
    (b) engine E=1 ``train_ensemble`` with one config: the real code path of ``listcopy train``
    (c) engine E=8, E=64 (or the ``sizes`` asked for): seeds 0..E-1 at once

All on the default config and one device (``cpu`` unless asked; ``auto`` picks cuda, mps, cpu),
for the same number of steps, evaluation every 100 steps included. Reported: ms per step, ms per
model-step (a step of one model: ms/step / E), the speed-up of each model-step over (a), the
same per model-step of the training loop alone (steps and evaluations, without drawing the E
models and copying their weights back: at E = 8192 on an H200 a fifth of a 2000-step run)
and, on cuda, the peak GPU memory of each run. The CPU kernel's build time (cold cache, in a
temporary directory) is reported on its own; the timed runs use the warm cache, as a second
``listcopy train`` would.
"""

from __future__ import annotations

import itertools
import json
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, NamedTuple, TextIO

import torch

from .config import Config
from .engine import Ensemble, kernel_build
from .model import build_model
from .task import dataset
from .training import resolve_device, train_ensemble

ENSEMBLE_SIZES = (1, 8, 64)


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo (or what platform knows)."""
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def notebook_loop(config: Config, steps: int, device: torch.device | str = "cpu", *,
                  early_stop: bool = True) -> float:
    """The seed notebook's ``train()`` (without tqdm and prints) for ``steps`` steps; seconds.
    Without ``early_stop`` it runs every step (its evaluations still made)."""
    from torch.utils.data import DataLoader, TensorDataset

    task = config.task
    L, V = task.list_len, task.vocab
    data = dataset(config)
    train_dl = DataLoader(TensorDataset(data.train_inputs, data.train_targets), 128, shuffle=True,
                          drop_last=True)
    val_dl = DataLoader(TensorDataset(data.val_inputs, data.val_targets), 256, drop_last=False)
    m = build_model(config).to(device)

    def accuracy(m):
        m.eval()
        hits = tots = 0
        with torch.no_grad():
            for inputs, targets in val_dl:
                logits = m(inputs.to(device))[:, L + 1:]
                preds = logits.argmax(-1)
                hits += (preds == targets[:, L + 1:].to(device)).sum().item()
                tots += preds.numel()
        return hits / tots

    with torch.random.fork_rng():
        torch.manual_seed(config.train.seed)
        start = time.perf_counter()
        opt = torch.optim.AdamW(m.parameters(), config.train.lr,
                                weight_decay=config.train.weight_decay)
        ce = torch.nn.CrossEntropyLoss()
        dl = itertools.cycle(train_dl)
        for step in range(steps):
            inputs, targets = next(dl)
            logits = m(inputs.to(device))[:, L + 1:].reshape(-1, V)
            loss = ce(logits, targets[:, L + 1:].reshape(-1).to(device))
            loss.backward()
            opt.step()
            opt.zero_grad()
            if (step + 1) % 100 == 0:
                acc = accuracy(m)
                if early_stop and acc >= config.train.early_stop_acc:
                    break
                loss.item()
        return time.perf_counter() - start


class EngineRun(NamedTuple):
    seconds: float  # the whole call: members drawn, ensemble built, trained, weights taken back
    model_steps: int  # the steps the members took in all
    loop_seconds: float  # its training loop alone: steps and evaluations (the runs' wall_time_s)


def engine_run(config: Config, steps: int, n_members: int,
               device: torch.device | str = "cpu") -> tuple[float, float]:
    """``train_ensemble`` of seeds 0..E-1 for ``steps`` steps (no early stop); its seconds,
    whole and of its training loop alone (``engine_model_steps``)."""
    run = engine_model_steps(config, steps, n_members, device)
    assert run.model_steps == steps * n_members, "a member stopped early"
    return run.seconds, run.loop_seconds


def engine_model_steps(config: Config, steps: int, n_members: int,
                       device: torch.device | str = "cpu") -> EngineRun:
    """``train_ensemble`` of seeds 0..E-1 for ``steps`` steps, none stopping early (as the
    notebook's loop in the benchmarks): its seconds, the steps the members took in all, and the
    seconds of its training loop (the longest-running member's ``wall_time_s``: its steps and
    evaluations, without the set-up before them and the weights' last copy after them)."""
    configs = [config.override([f"train.seed={s}", f"train.max_steps={steps}",
                                f"train.device={device}"])
               for s in range(n_members)]
    start = time.perf_counter()
    runs = train_ensemble(configs, progress=False, early_stop=False)
    return EngineRun(time.perf_counter() - start, sum(r.step for r in runs),
                     max(r.wall_time_s for r in runs))


def kernel_build_seconds(config: Config) -> float | None:
    """Seconds to build the CPU kernel for ``config`` from a cold (temporary) cache, or None."""
    shape = Ensemble(config, [build_model(config, hooks=False).state_dict()], "cpu",
                     backend="torch").kernel_shape()
    if shape is None:
        return None
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        built = kernel_build.load(shape, fresh=True, cache_root=Path(tmp)) is not None
        return time.perf_counter() - start if built else None


def run_bench(threads: int = 1, steps: int = 2000, as_json: bool = False,
              out: TextIO | None = None, device: str = "cpu",
              sizes: tuple[int, ...] = ENSEMBLE_SIZES, log: TextIO | None = None) -> dict[str, Any]:
    """Measure (a) the notebook's loop, (b) the engine at E=1, (c) at each other E of ``sizes``
    (default config on ``device``, ``steps`` steps each, ``threads`` torch threads); print a
    table (or JSON with ``as_json``) to ``out`` (stdout) and return the figures. With ``log``,
    each run's seconds are written there as soon as it ends."""
    out = out or sys.stdout
    config = Config()
    dev = resolve_device(device)
    sizes = tuple(dict.fromkeys((1, *sizes)))  # E=1 first, each size once
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        build_s = kernel_build_seconds(config) if dev.type == "cpu" else None
        backend = Ensemble(config, [build_model(config, hooks=False).state_dict()], dev).backend
        engine_run(config, 100, 1, dev)  # warm-up: imports, allocator, kernel load, cuda context
        rows = [_measured("notebook loop", 1, dev,
                          lambda: (notebook_loop(config, steps, dev),) * 2, log)]
        for n in sizes:
            rows.append(_measured(f"engine E={n}", n, dev,
                                  lambda n=n: engine_run(config, steps, n, dev), log))
    finally:
        torch.set_num_threads(previous)
    ref_ms = rows[0]["seconds"] / steps * 1e3
    for row in rows:
        row["ms_per_step"] = row["seconds"] / steps * 1e3
        row["ms_per_model_step"] = row["ms_per_step"] / row["members"]
        row["loop_ms_per_model_step"] = row["loop_seconds"] / steps * 1e3 / row["members"]
        row["speedup"] = ref_ms / row["ms_per_model_step"]
    result = {
        "config": config.name, "steps": steps, "eval_every": config.train.eval_every,
        "threads": threads, "cpu": cpu_model(), "device": str(dev), "gpu": gpu_name(dev),
        "torch": torch.__version__,
        "python": platform.python_version(), "backend": backend,
        "kernel_build_s_cold": build_s, "rows": rows,
    }
    if as_json:
        print(json.dumps(result, indent=1), file=out)
    else:
        print(format_table(result), file=out)
    return result


def _measured(run: str, members: int, device: torch.device, timed,
              log: TextIO | None) -> dict[str, Any]:
    """One row: ``timed()``'s seconds, whole and of the training loop alone, and on cuda the
    peak GPU memory it allocated."""
    cuda = device.type == "cuda"
    if cuda:
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
    seconds, loop = timed()
    row: dict[str, Any] = {"run": run, "members": members, "seconds": seconds,
                           "loop_seconds": loop}
    if cuda:
        row["peak_gpu_mb"] = torch.cuda.max_memory_allocated(device) / 2**20
    if log is not None:
        print(f"{run}: {row['seconds']:.2f} s", file=log, flush=True)
    return row


def gpu_name(device: torch.device) -> str | None:
    return torch.cuda.get_device_name(device) if device.type == "cuda" else None


def format_table(result: dict[str, Any]) -> str:
    build = result["kernel_build_s_cold"]
    on = f"device: {result['device']}" + (f" ({result['gpu']})" if result.get("gpu") else "")
    lines = [
        f"listcopy bench: {result['config']} (default config), {result['steps']} steps, "
        f"eval every {result['eval_every']}",
        f"{on}, cpu: {result['cpu']}, threads: {result['threads']}, torch {result['torch']}, "
        f"engine backend: {result['backend']}"
        + (f" (kernel build, cold cache: {build:.2f} s; timed runs use the warm cache)"
           if build is not None else ""),
        "",
    ]
    gpu = any("peak_gpu_mb" in row for row in result["rows"])
    lines.append(f"{'run':<16}{'ms/step':>10}{'ms/model-step':>16}{'speed-up':>10}"
                 f"{'loop ms/model-step':>20}" + (f"{'peak GPU MB':>13}" if gpu else ""))
    for row in result["rows"]:
        loop = row.get("loop_ms_per_model_step")  # absent from JSON written before it was kept
        lines.append(f"{row['run']:<16}{row['ms_per_step']:>10.3f}{row['ms_per_model_step']:>16.4f}"
                     f"{row['speedup']:>9.1f}x"
                     + (f"{loop:>20.4f}" if loop is not None else " " * 20)
                     + (f"{row['peak_gpu_mb']:>13.1f}" if gpu else ""))
    lines += ["", "ms/step, ms/model-step, speed-up: the whole run (models drawn, ensemble built,",
              "weights copied back); loop: its training loop alone (steps and evaluations)"]
    return "\n".join(lines)

