"""``listcopy bench --shapes``: the engine against the notebook's loop per shape, and against the floor.

For each width (d_model 8, 32, 64, 128 by default) and each flag set (``FLAG_SETS``: the seed's
constraints, LayerNorm + biases, learned W_V / W_O, all of them, two heads; ``--all-flags``: all
32 combinations), in one process and one sitting:

    notebook loop   the seed's loop (bench.notebook_loop) on that configuration
    engine E=1      ``train_ensemble`` of one model (the code path of ``listcopy train``)
    engine E=64     64 seeds at once (``sizes``)

each for the same number of steps (evaluation every 100 included), chosen per shape so that a
run does about ``WORK_FLOP`` of arithmetic. Per run: ms per step, ms per model-step, the speed-up
over the notebook loop, the FLOPs of one model-step of the work the run does (the engine's:
masked rows pruned, kernel.py's count; the notebook's: every row, every product; each with its
evaluation, the validation split's forward pass every 100 steps, amortised over them), the floor
(those FLOPs at this machine's one-core matrix-product rate, measured in the same run) and the
run's ratio to it. Wall and CPU time (getrusage) are both kept, and the ratio of the run's
training loop alone ("loop x": its steps and evaluations, the runs' ``wall_time_s``): an
engine run's whole time also holds drawing its E models, building the ensemble and taking the
weights back, which a short run (100 steps at E = 64) does not amortise; the notebook's loop is
timed after its model is built, as the seed's ``train()`` is.

The rate is the faster of torch's sgemm (``sgemm_rate``) and a register-tiled product compiled
with the kernel's compiler and flags (``compiled_rate``, engine/matmul_probe.c): torch's BLAS does
not always use the whole core (MKL runs its AVX2 code on AMD CPUs, half of an AVX-512 core's FMA
width), and a floor at a rate the kernel itself beats would flatter every ratio.
"""

from __future__ import annotations

import itertools
import resource
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterable, TextIO

import torch

from .config import Config
from .engine import Ensemble
from .engine.matmul_probe import load_probe
from .model import build_model

WIDTHS = (8, 32, 64, 128)
WORK_FLOP = 4e10  # arithmetic per timed run: a few seconds at tens of GFLOP/s
FLAG_SETS: dict[str, dict[str, Any]] = {
    "seed": {},
    "ln_bias": {"ln": True, "use_bias": True},
    "learned_vo": {"freeze_wv": False, "freeze_wo": False},
    "all": {"ln": True, "use_bias": True, "freeze_wv": False, "freeze_wo": False},
    "heads2": {"n_heads": 2},
}


def all_flag_sets() -> dict[str, dict[str, Any]]:
    """Every combination of LayerNorm, biases, learned W_V, learned W_O and 1 or 2 heads."""
    out = {}
    for ln, bias, wv, wo, heads in itertools.product([False, True], [False, True], [False, True],
                                                     [False, True], [1, 2]):
        name = "-".join(n for n, on in (("ln", ln), ("bias", bias), ("wv", wv), ("wo", wo),
                                        ("h2", heads == 2)) if on) or "seed"
        out[name] = {"ln": ln, "use_bias": bias, "freeze_wv": not wv, "freeze_wo": not wo,
                     "n_heads": heads}
    return out


def chosen_flag_sets(names: str | None, every: bool = False) -> dict[str, dict[str, Any]]:
    """The flag sets ``names`` ("ln_bias,all") picks from ``FLAG_SETS`` (``every``: from
    :func:`all_flag_sets`), in that order; all of them for None. KeyError names the unknown."""
    known = all_flag_sets() if every else dict(FLAG_SETS)
    if names is None:
        return known
    picked = [n.strip() for n in names.split(",")]
    unknown = [n for n in picked if n not in known]
    if unknown:
        raise KeyError(f"unknown flag set(s) {', '.join(map(repr, unknown))}; "
                       f"known: {', '.join(known)}")
    return {n: known[n] for n in picked}


def cpu_seconds() -> float:
    """This process's user + system CPU time (getrusage)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def sgemm_rate(sizes: tuple[int, ...] = (256, 512), seconds: float = 0.5) -> dict[str, float]:
    """One core's float32 matrix-product rate (torch.mm on this thread count), FLOP/s: the best
    over ``sizes`` of wall and of CPU time, each timed for about ``seconds``."""
    best = {"wall": 0.0, "cpu": 0.0}
    for n in sizes:
        a, b = torch.randn(n, n), torch.randn(n, n)
        for _ in range(3):
            a @ b
        reps, t0, c0 = 0, time.perf_counter(), cpu_seconds()
        while time.perf_counter() - t0 < seconds:
            a @ b
            reps += 1
        flops = 2.0 * n ** 3 * reps
        best["wall"] = max(best["wall"], flops / (time.perf_counter() - t0))
        best["cpu"] = max(best["cpu"], flops / max(cpu_seconds() - c0, 1e-9))
    return best


def compiled_rate(probe: Callable[[int, int], float] | None,
                  seconds: float = 0.5) -> dict[str, float]:
    """The compiled product's rate (``probe`` from ``load_probe``) on torch's thread count, FLOP/s
    of wall and of CPU time; zeros without a probe."""
    if probe is None:
        return {"wall": 0.0, "cpu": 0.0}
    threads = torch.get_num_threads()
    probe(threads, 2)  # warm: pages touched, clocks up
    flops, t0, c0 = 0.0, time.perf_counter(), cpu_seconds()
    while time.perf_counter() - t0 < seconds:
        flops += probe(threads, 20)
    return {"wall": flops / (time.perf_counter() - t0),
            "cpu": flops / max(cpu_seconds() - c0, 1e-9)}


def matmul_rates(probe: Callable[[int, int], float] | None) -> dict[str, dict[str, float]]:
    """torch's sgemm and the compiled product, GFLOP/s of wall and CPU time each."""
    rates = {"sgemm": sgemm_rate(), "compiled": compiled_rate(probe)}
    return {name: {k: v / 1e9 for k, v in r.items()} for name, r in rates.items()}


def fastest(measured: Iterable[dict[str, float]]) -> dict[str, float]:
    """The fastest of several rate measurements, wall and CPU time each."""
    measured = list(measured)
    return {k: max(r[k] for r in measured) for k in ("wall", "cpu")}


def floor_rate(probe: Callable[[int, int], float] | None = None) -> float:
    """FLOP/s of wall time a floor is taken at: the faster of torch's sgemm and the compiled
    product (built here unless ``probe`` is given)."""
    rates = matmul_rates(probe if probe is not None else load_probe())
    return fastest(rates.values())["wall"] * 1e9


def with_evaluation(config: Config, step: float, forward: float) -> float:
    """A model-step's FLOPs (``step``) and its share of the run's evaluation: the validation
    split's forward pass (``forward`` per sequence) every ``eval_every`` steps."""
    return step + config.task.n_val * forward / config.train.eval_every


def notebook_flops_per_step(config: Config) -> float:
    """One step of the notebook's hooked model: every position through every product (Q, K, V,
    O, attention over all T x T scores, the unembedding at every position), forward and backward
    (twice the forward), and its share of the evaluation."""
    T, D, V = config.task.seq_len, config.model.d_model, config.task.vocab
    per_layer = 4 * 2.0 * T * D * D + 2 * 2.0 * T * T * D
    forward = config.model.n_layers * per_layer + 2.0 * T * D * V
    return with_evaluation(config, 3.0 * forward * config.batch_size, forward)


@dataclass(frozen=True)
class Timed:
    wall: float
    cpu: float


def timed(fn: Callable[[], Any]) -> tuple[Timed, Any]:
    """Wall and CPU seconds of ``fn()``, and what it returned."""
    t0, c0 = time.perf_counter(), cpu_seconds()
    out = fn()
    return Timed(time.perf_counter() - t0, cpu_seconds() - c0), out


def steps_for(flops_per_model_step: float, members: int, eval_every: int, most: int = 2000) -> int:
    """Steps of a run doing about WORK_FLOP, a multiple of ``eval_every``, 100 to ``most``."""
    steps = WORK_FLOP / max(flops_per_model_step * members, 1.0)
    return int(min(most, max(100, steps)) // eval_every * eval_every) or eval_every


def shape_config(d_model: int, flags: dict[str, Any], n_layers: int = 3) -> Config:
    return Config().replace(model={"d_model": d_model, "n_layers": n_layers, **flags})


def engine_flops_per_step(config: Config) -> tuple[float, str]:
    """One model-step of the engine's work on ``config`` (the kernel's pruned count, its share of
    the evaluation included), and the backend "auto" picks on the CPU."""
    ens = Ensemble(config, [build_model(config, hooks=False).state_dict()], "cpu")
    shape = ens.kernel_shape()
    if shape is None:
        return notebook_flops_per_step(config), ens.backend
    return (with_evaluation(config, shape.flops_per_step(config.batch_size),
                            shape.flops_per_sequence()), ens.backend)


def bench_shape(config: Config, sizes: tuple[int, ...], rate: dict[str, float],
                log: TextIO | None, most: int = 2000, repeat: int = 1) -> list[dict[str, Any]]:
    """The notebook loop and the engine at each of ``sizes`` on one configuration: one row each.
    With ``repeat`` > 1 the runs go round ``repeat`` times (interleaved, so that a burst of load
    from another job falls on all of them) and each row is its fastest repeat (``walls_s``: all)."""
    from .bench import engine_model_steps, notebook_loop

    engine_flops, backend = engine_flops_per_step(config)
    every = config.train.eval_every

    def notebook(steps: int) -> tuple[int, float]:
        seconds = notebook_loop(config, steps, early_stop=False)  # its model built untimed
        return steps, seconds

    def engine(steps: int, n: int) -> tuple[int, float]:
        run = engine_model_steps(config, steps, n)  # no early stop, as the notebook's
        return run.model_steps, run.loop_seconds

    plan = [("notebook loop", 1, notebook_flops_per_step(config), "hooked", notebook)]
    plan += [(f"engine E={n}", n, engine_flops, backend, lambda steps, n=n: engine(steps, n))
             for n in sizes]
    tries: list[list[tuple[Timed, int, float]]] = [[] for _ in plan]  # (time, model-steps, loop)
    for _, (i, (run, members, flops, used, fn)) in itertools.product(range(repeat),
                                                                     enumerate(plan)):
        n_steps = steps_for(engine_flops, members, every, most)  # the notebook: as many as E=1
        t, (model_steps, loop) = timed(lambda: fn(n_steps))
        tries[i].append((t, model_steps, loop))
        if log is not None:
            r = _row(run, members, model_steps / members, used, flops, t, loop, rate)
            print(f"{config.name} {run}: {t.wall:.2f} s, {r['steps']:g} steps, "
                  f"{r['ms_per_model_step']:.4f} ms/model-step, {r['x_floor']:.2f}x floor "
                  f"({r['cpu_x_floor']:.2f} cpu, loop {r['loop_x_floor']:.2f})", file=log,
                  flush=True)
    rows = []
    for (run, members, flops, used, _), done in zip(plan, tries):
        t, steps, _ = min(done, key=lambda d: d[0].wall)
        loop = min(d[2] for d in done)  # (a run's steps are the same each time: seeded)
        rows.append({**_row(run, members, steps / members, used, flops, t, loop, rate),
                     "walls_s": [d[0].wall for d in done], "loops_s": [d[2] for d in done]})
    for row in rows:
        row["speedup"] = rows[0]["ms_per_model_step"] / row["ms_per_model_step"]
        row["cpu_speedup"] = rows[0]["cpu_ms_per_model_step"] / row["cpu_ms_per_model_step"]
    return rows


def _row(run: str, members: int, steps: float, backend: str, flops: float, t: Timed,
         loop: float, rate: dict[str, float]) -> dict[str, Any]:
    """A run's figures: per model-step, wall and CPU time of the whole run and the wall time of
    its training loop alone (``loop`` seconds)."""
    wall, cpu = t.wall / steps / members, t.cpu / steps / members
    row = {"run": run, "members": members, "steps": steps, "backend": backend,
           "ms_per_step": t.wall / steps * 1e3, "ms_per_model_step": wall * 1e3,
           "cpu_ms_per_model_step": cpu * 1e3,
           "loop_ms_per_model_step": loop / steps / members * 1e3,
           "mflop_per_model_step": flops / 1e6}
    return _set_floor(row, rate)


def _set_floor(row: dict[str, Any], rate: dict[str, float]) -> dict[str, Any]:
    """The row's floor (its FLOPs at ``rate``, FLOP/s of wall and CPU time) and its ratios to it."""
    flops = row["mflop_per_model_step"] * 1e6
    row["floor_ms"] = flops / rate["wall"] * 1e3
    row["x_floor"] = row["ms_per_model_step"] / row["floor_ms"]
    row["cpu_x_floor"] = row["cpu_ms_per_model_step"] / (flops / rate["cpu"] * 1e3)
    if "loop_ms_per_model_step" in row:
        row["loop_x_floor"] = row["loop_ms_per_model_step"] / row["floor_ms"]
    return row


def run_shapes(widths: tuple[int, ...] = WIDTHS, flag_sets: dict[str, dict[str, Any]] | None = None,
               sizes: tuple[int, ...] = (1, 64), n_layers: int = 3,
               log: TextIO | None = None, most_steps: int = 2000,
               repeat: int = 1) -> dict[str, Any]:
    """Every width x flag set (default ``FLAG_SETS``), the sgemm rate measured first and last;
    each run the fastest of ``repeat`` (see :func:`bench_shape`)."""
    from .bench import cpu_model, engine_run, notebook_loop

    flag_sets = FLAG_SETS if flag_sets is None else flag_sets
    notebook_loop(Config(), 100)  # warm-up: torch's first autograd / AdamW / DataLoader calls
    engine_run(Config(), 100, 1)
    probe = load_probe()
    before = matmul_rates(probe)
    rate = {k: v * 1e9 for k, v in fastest(before.values()).items()}
    shapes = []
    for d_model, (name, flags) in itertools.product(widths, flag_sets.items()):
        config = shape_config(d_model, flags, n_layers)
        shapes.append({"d_model": d_model, "flags": name, "config": config.name,
                       "rows": bench_shape(config, sizes, rate, log, most_steps, repeat)})
    after = matmul_rates(probe)
    return with_best_floor({
        "threads": torch.get_num_threads(), "cpu": cpu_model(), "torch": torch.__version__,
        **{f"{name}_gflops": before[name] for name in before},
        **{f"{name}_gflops_after": after[name] for name in after},
        "n_layers": n_layers, "repeat": repeat, "shapes": shapes})


def with_best_floor(result: dict[str, Any]) -> dict[str, Any]:
    """Every row's floor at the fastest matrix-product rate measured (``floor_gflops``: torch's
    sgemm or the compiled product, before or after the runs): a core that was slowed down (by
    another job, a clock) when one was taken does not lower the floor, so a ratio to it never
    flatters the run."""
    best = fastest(v for key, v in result.items() if key.endswith(("_gflops", "_gflops_after")))
    for shape in result["shapes"]:
        for r in shape["rows"]:
            _set_floor(r, {k: v * 1e9 for k, v in best.items()})
    return {**result, "floor_gflops": best}


def format_shapes(result: dict[str, Any]) -> str:
    """One table: a block of rows per shape."""
    def measured(name: str) -> str:
        g, after = result.get(f"{name}_gflops"), result.get(f"{name}_gflops_after")
        return "not measured" if not g or not g["wall"] else (
            f"{g['wall']:.1f} GFLOP/s wall, {g['cpu']:.1f} cpu "
            f"(after: {after['wall']:.1f}, {after['cpu']:.1f})")

    lines = [f"listcopy bench --shapes: {result['n_layers']} layers, cpu: {result['cpu']}, "
             f"threads: {result['threads']}, torch {result['torch']}",
             f"matrix products: torch's sgemm {measured('sgemm')}; compiled tiled product "
             f"{measured('compiled')}",
             f"floor = the run's FLOPs at the fastest, {result['floor_gflops']['wall']:.1f} "
             "GFLOP/s; x floor: wall (cpu) of the whole run; loop x: its training loop alone"
             + (f"; each run the fastest of {result['repeat']}, interleaved"
                if result.get("repeat", 1) > 1 else ""), "",
             f"{'d':>4} {'flags':<11}{'run':<15}{'backend':<8}{'ms/step':>9}{'ms/model-step':>15}"
             f"{'speed-up':>10}{'MFLOP':>8}{'floor ms':>10}{'x floor':>13}{'loop x':>8}"]
    for shape in result["shapes"]:
        for i, r in enumerate(shape["rows"]):
            head = f"{shape['d_model']:>4} {shape['flags']:<11}" if i == 0 else " " * 16
            lines.append(f"{head}{r['run']:<15}{r['backend']:<8}{r['ms_per_step']:>9.3f}"
                         f"{r['ms_per_model_step']:>15.4f}{r['speedup']:>9.1f}x"
                         f"{r['mflop_per_model_step']:>8.1f}{r['floor_ms']:>10.4f}"
                         f"{r['x_floor']:>7.2f} ({r['cpu_x_floor']:.2f})"
                         f"{r.get('loop_x_floor', float('nan')):>8.2f}")
    return "\n".join(lines)
