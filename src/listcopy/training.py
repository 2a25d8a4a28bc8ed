"""Training runs: one model or many at once, through one code path (the engine, E >= 1).

Each member follows the seed's random-number discipline on its own generator, seeded with its
``train.seed``: the split's ``randperm`` (a draw the notebook makes before building the model), the
model's init, then the training DataLoader's two int64 draws (the loader's base seed, unused, then the
sampler's seed, which seeds the ``randperm`` of the training set). ``itertools.cycle`` caches the
first epoch, so by default the same ``n_train // batch_size`` batches repeat in the same order;
with ``train.reshuffle`` each new epoch makes the two draws again, as a fresh DataLoader iterator would.

With ``train.fresh_data`` the two DataLoader draws are replaced by one int64 draw, the seed of the
member's stream of fresh training lists (fresh.py, batches.py).

A member stops at the first evaluation where its validation accuracy reaches ``early_stop_acc``
(unless ``train_ensemble``'s ``early_stop`` is False: it records that step and trains on), when
``train.patience`` evaluations pass without improvement (stopping.py), at ``max_steps``, or at a
non-finite loss; stopped members are frozen while the rest go on. With a ``quorum`` of k, the
members still running stop together (``stop_reason`` "quorum") at the first evaluation where k
members of the call have reached their threshold: what a search that asks "do at least k of these
seeds pass?" needs, without the rest's remaining steps. Each step's learning rate
comes from the schedule (schedule.py); ``train.max_grad_norm`` clips each member's gradient.

A run directory is locked (``run.lock``) for the whole run. It is checkpointed when a member stops
and at the first evaluation at or after each multiple of ``checkpoint_every`` (evaluations come
every ``eval_every`` steps: with 1,000 and 999 the checkpoints are at 1,000, 2,000, 3,000, ...),
so a resume always starts from an evaluated step. ``resume`` continues a directory's train state
(a new run where the directory holds none of a run's files); it refuses a run whose state is gone,
a config that differs in anything but the device (and ``max_steps``, under a constant lr), and a
state whose weights, moments or batch order do not fit the config (a tampered file).
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import torch
from torch import Tensor

from . import checkpoint as ckpt
from .batches import BatchOrder, EpochBatches, FreshBatches
from .config import SHARED_TRAIN_KEYS, Config, check_ensemble  # noqa: F401  (keys: re-exported)
from .devices import accelerators
from .devices import choose as choose_device
from .engine import OPTIMIZER_STATE_KEYS, Ensemble, Layout
from .fresh import FreshLists
from .gc_pause import gc_paused
from .locks import ensure_open_files
from .model import InitialState, ListCopyCore, with_weights
from .schedule import lr_of_step, lr_table
from .stopping import KeepRule, Patience, Quorum
from .task import Dataset, dataset, seed_generator
from .tracking import Tracker

OPTIM_PREFIX = "optim."  # train_state.safetensors: the AdamW state's tensors (optim.exp_avg, ...)


def resolve_device(name: str = "auto") -> torch.device:
    """``auto``: cuda, then mps, then cpu (for work other than training; training chooses by the
    job, devices.py)."""
    if name != "auto":
        return torch.device(name)
    return torch.device(next(iter(accelerators()), "cpu"))


@dataclass
class Run:
    """One trained model: its config, where it stopped, why, and its metrics history."""

    config: Config
    state: dict[str, Tensor]
    step: int = 0
    status: str = "running"  # running | done | failed
    stop_reason: str | None = None  # early_stop | patience | max_steps | non_finite | quorum
    steps_to_threshold: int | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    history: list[dict[str, float]] = field(default_factory=list)
    wall_time_s: float = 0.0
    error: str | None = None
    run_dir: Path | None = None

    @property
    def name(self) -> str:
        return self.config.name

    def model(self, hooks: bool = True) -> ListCopyCore:
        """The trained model: hooked (TransformerLens) unless ``hooks`` is False."""
        return with_weights(self.config, self.state, hooks)

    def record(self) -> dict[str, Any]:
        """What run.json holds."""
        return {"name": self.name, "config": self.config.to_dict(), "step": self.step,
                "status": self.status, "stop_reason": self.stop_reason,
                "steps_to_threshold": self.steps_to_threshold, "metrics": self.metrics,
                "wall_time_s": round(self.wall_time_s, 3), "error": self.error,
                "history": self.history}

    @classmethod
    def from_record(cls, record: dict[str, Any], state: dict[str, Tensor],
                    run_dir: Path | None = None) -> "Run":
        fields_ = {f.name for f in dataclasses.fields(cls)} - {"config", "state", "run_dir"}
        kwargs = {k: record[k] for k in fields_ if k in record}
        return cls(config=Config.from_dict(record["config"]), state=state, run_dir=run_dir,
                   **kwargs)


@dataclass
class _Member:
    run: Run
    source: BatchOrder | FreshLists  # where its training lists come from
    optim_state: dict[str, Tensor] | None = None  # AdamW moments to resume from
    patience: Patience = field(default_factory=Patience)


def train(config: Config, out: str | Path | None = None, *, resume: bool = False,
          progress: bool = True, tracker: Tracker | None = None) -> Run:
    """Train one model as the seed does; write its run directory to ``out`` if given."""
    return train_ensemble([config], [out] if out is not None else None, resume=resume,
                          progress=progress, tracker=tracker)[0]


def train_ensemble(configs: Sequence[Config], out_dirs: Sequence[str | Path] | None = None, *,
                   resume: bool = False, progress: bool = True,
                   tracker: Tracker | None = None, quorum: int | None = None,
                   early_stop: bool = True) -> list[Run]:
    """Train several models of one shape at once (one optimiser step for all).

    Members share ``config.task``, ``config.model`` and the train settings in ``SHARED_TRAIN_KEYS``;
    seed, lr, weight_decay, early_stop_acc, max_steps, the schedule, clipping and patience may
    differ. Returns one Run per config. ``tracker`` gets every evaluation (tracking.py).
    ``quorum``: once this many members (resumed finished ones included) have reached their
    threshold, the rest stop at that evaluation (see the module's docstring); None: never.
    ``early_stop`` False: members train on past ``early_stop_acc`` (their ``steps_to_threshold``
    still recorded) to ``max_steps``, as the benchmarks' runs of a fixed number of steps do.
    """
    if not configs:
        return []
    check_ensemble(configs)
    dirs = [Path(d) for d in out_dirs] if out_dirs is not None else [None] * len(configs)
    if len(dirs) != len(configs):
        raise ValueError("one output directory per config")
    with contextlib.ExitStack() as locks:  # each run directory is ours until training ends
        ensure_open_files(sum(d is not None for d in dirs))
        for d in dirs:  # taken first: a busy folder is refused before any work (a kernel build)
            if d is not None:
                locks.enter_context(ckpt.lock_run_dir(d))
        chosen = choose_device(configs[0], len(configs))
        if progress and configs[0].train.device == "auto":
            print(f"listcopy: {chosen.line()}", file=sys.stderr, flush=True)
        device = chosen.device
        data = dataset(configs[0]).to(device)
        initial = InitialState(ListCopyCore(configs[0]))  # one module for E members' draws
        members = prepare_members(configs, dirs, resume, initial, data)
        todo = [m for m in members if m.run.status == "running"]
        rule = None if quorum is None else Quorum(quorum, [m.run for m in members])
        for start in sorted({m.run.step for m in todo}):  # members resumed at one step: together
            _train_group([m for m in todo if m.run.step == start], data, device, progress,
                         tracker, rule, early_stop)
    return [m.run for m in members]


def prepare_members(configs: Sequence[Config], dirs: Sequence[Path | None], resume: bool,
                    initial: InitialState, data: Dataset) -> list[_Member]:
    """Each config's member (``_prepare``), the garbage collector paused (gc_pause.py)."""
    with gc_paused():
        return [_prepare(c, d, resume, initial, data) for c, d in zip(configs, dirs)]


def _prepare(config: Config, run_dir: Path | None, resume: bool,
             initial: InitialState, data: Dataset) -> _Member:
    """A member: resumed from ``run_dir``'s train state, or new (a fresh directory only)."""
    if run_dir is not None:
        if ckpt.holds_run(run_dir) and not resume:
            raise ckpt.CheckpointError(f"{run_dir}: already holds a run (use --resume or another"
                                       " --out)")
        ckpt.ensure_writable(run_dir)  # fail now, not after the first hour of training
        ckpt.remove_stale_temporaries(run_dir)
        if resume and ckpt.holds_run(run_dir):
            return _resumed(config, run_dir, data)
    gen = seed_generator(config.task, config.train.seed)
    state = initial.draw(gen)
    source = _source(config, gen, data)
    if isinstance(source, BatchOrder):
        source.batches(0)  # the DataLoader iterator is created (and draws) right after make_model()
    return _Member(Run(config, state, run_dir=run_dir), source)


def _source(config: Config, gen: torch.Generator, data: Dataset) -> BatchOrder | FreshLists:
    """The member's batch order, or its stream of fresh lists (seeded by one draw from ``gen``)."""
    task, tc = config.task, config.train
    if not tc.fresh_data:
        return BatchOrder(gen, task.n_train, config.batch_size, tc.reshuffle)
    seed = int(torch.empty((), dtype=torch.int64).random_(generator=gen))
    val_lists = data.val_inputs[:, : task.list_len].cpu()
    return FreshLists(task, val_lists, torch.Generator().manual_seed(seed))


def _resumed(config: Config, run_dir: Path, data: Dataset) -> _Member:
    """A member as its latest checkpoint left it: weights, AdamW moments, batch source, patience.
    Refused where the train state is gone (a run that cannot be continued is never trained over)
    or the config differs in more than ``resumable_keys`` (the message names the keys)."""
    if not (run_dir / ckpt.STATE_FILE).exists():
        raise ckpt.CheckpointError(f"{run_dir}: nothing to resume: {ckpt.STATE_FILE} is missing"
                                   " (this run cannot be continued; train into another --out)")
    tensors, meta = ckpt.read_train_state(run_dir)
    saved = Config.from_dict(meta["config"])
    changed = config_changes(saved, config)
    if changed:
        raise ckpt.CheckpointError(
            f"{run_dir}: holds a run with another config ({'; '.join(changed[:3])}"
            f"{'; ...' if len(changed) > 3 else ''}): resume with the same --config and --set "
            f"(only {' and '.join(resumable_keys(saved))} may change)")
    path = str(run_dir / ckpt.STATE_FILE)
    state = {k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")}
    ckpt.check_state_dict(state, config, path)
    ckpt.finish_checkpoint(run_dir, meta, state)  # a kill between its writes: completed first
    run = Run.from_record(meta, state, run_dir)
    run.config = config
    if run.stop_reason == "max_steps" and run.step < config.train.max_steps:  # resumed, more steps
        run.status, run.stop_reason = "running", None
    source = _source(config, torch.Generator(), data)
    _check_source_state(source, tensors, run.step, path)
    source.load_state(tensors)
    optim = {k[len(OPTIM_PREFIX):]: v for k, v in tensors.items() if k.startswith(OPTIM_PREFIX)}
    if set(optim) != set(OPTIMIZER_STATE_KEYS):
        raise ckpt.CheckpointError(f"{path}: no optimiser state to resume")
    size = Layout.of(ListCopyCore(config)).size  # the moments of each trainable weight, flat
    for key in OPTIMIZER_STATE_KEYS:
        ckpt.check_tensor(tensors, OPTIM_PREFIX + key, (size,), torch.get_default_dtype(), path)
    every = config.train.eval_every
    patience = Patience.replay([h["acc"] for h in run.history if h["step"] % every == 0])
    return _Member(run, source, optim, patience)


def _check_source_state(source: BatchOrder | FreshLists, tensors: dict[str, Tensor], step: int,
                        path: str) -> None:
    """The batch source's saved state fits ``source``: a generator's state, and (an epoch order)
    an epoch's batches of distinct training rows, of an epoch up to ``step``'s."""
    if isinstance(source, FreshLists):
        ckpt.check_generator_state(tensors, "rng.fresh", path)
        return
    ckpt.check_generator_state(tensors, "rng.generator", path)
    shape = (source.n_batches, source.batch_size)
    rows = ckpt.check_tensor(tensors, "rng.perm", shape, torch.int64, path).reshape(-1)
    if rows.unique().numel() != rows.numel() or not ((rows >= 0) & (rows < source.n_train)).all():
        raise ckpt.CheckpointError(f"{path}: 'rng.perm' is not an order of distinct rows of the"
                                   f" {source.n_train} training lists")
    epoch = int(ckpt.check_tensor(tensors, "rng.epoch", (), torch.int64, path))
    if not 0 <= epoch <= source.epoch_of(step):
        raise ckpt.CheckpointError(f"{path}: 'rng.epoch' is {epoch}, not an epoch of step {step}")


def resumable_keys(config: Config) -> tuple[str, ...]:
    """What may differ when a run is resumed: the device, and ``max_steps`` under a constant lr
    (the cosine schedule depends on it)."""
    if config.train.lr_schedule == "constant":
        return ("train.device", "train.max_steps")
    return ("train.device",)


def config_changes(saved: Config, given: Config) -> list[str]:
    """``key: saved there, given now`` for each setting that differs, besides ``resumable_keys``."""
    a, b, free = saved.flat(), given.flat(), resumable_keys(saved)
    return [f"{k}: {a.get(k)!r} there, {b.get(k)!r} now" for k in sorted(set(a) | set(b))
            if k not in free and a.get(k) != b.get(k)]


def _train_group(members: list[_Member], data: Dataset, device: torch.device,
                 progress: bool, tracker: Tracker | None, quorum: Quorum | None = None,
                 early_stop: bool = True) -> None:
    """Train members resumed at one step together until each has stopped."""
    group = _Group(members, data, device, tracker, quorum, early_stop)
    bar = _progress_bar(progress, group.max_steps, group.step, len(members))
    with group.ens.host_serial():
        while group.running():
            if not group.train_stretch():
                continue
            group.write(group.evaluate())
            _update_bar(bar, group.step, group.runs, group.eval_every)
            group.t0 = time.perf_counter()
    if bar is not None:
        bar.close()


class _Group:
    """One ensemble of members that resumed at the same step: its hyperparameters, batches,
    running loss and clock; each member stops on its own."""

    def __init__(self, members: list[_Member], data: Dataset, device: torch.device,
                 tracker: Tracker | None = None, quorum: Quorum | None = None,
                 early_stop: bool = True):
        self.members, self.runs, self.data = members, [m.run for m in members], data
        self.tracker, self.quorum, self.early_stop = tracker, quorum, early_stop
        cfg = self.runs[0].config
        self.trains = [r.config.train for r in self.runs]
        self.eval_every, self.checkpoint_every = cfg.train.eval_every, cfg.train.checkpoint_every
        self.ens = Ensemble(cfg, [r.state for r in self.runs], device)
        self.step = self.runs[0].step
        if self.step > 0:
            self.ens.load_optimizer_states([m.optim_state for m in members], self.step)
        self.exact = torch.float32 if device.type == "mps" else torch.float64  # mps: no float64
        col = lambda xs: torch.tensor(xs, dtype=self.exact, device=device)  # noqa: E731
        self.wd = col([t.weight_decay for t in self.trains])
        clips = [t.max_grad_norm for t in self.trains]
        self.clip = col(clips) if any(c > 0 for c in clips) else None
        self.active = torch.ones(len(self.runs), dtype=torch.bool, device=device)
        self.max_steps = max(t.max_steps for t in self.trains)
        sources = [m.source for m in members]
        self.source = (FreshBatches(sources, cfg.task, cfg.batch_size, device)
                       if cfg.train.fresh_data else EpochBatches(sources, data, device))
        self.loss_sum = torch.zeros(len(self.runs), dtype=self.exact, device=device)
        self.since_eval, self.t0 = 0, time.perf_counter()
        self.last_eval = self.step  # a checkpoint is due where a multiple of checkpoint_every
        # lies in (last_eval, step]: every boundary gets one, at the first evaluation from it

    def running(self) -> bool:
        return self.step < self.max_steps and any(r.status == "running" for r in self.runs)

    def train_stretch(self) -> bool:
        """The steps up to the next evaluation (or a member's max_steps, or the epoch's end), in
        as few engine calls as the batch source allows; whether an evaluation is due where they
        end."""
        stop = _next_stop(self.step, self.runs, self.eval_every, self.max_steps,
                          self.source.stretch_end(self.step))
        lr = lr_table(self.trains, self.step, stop - self.step).to(self.active.device, self.exact)
        done = 0
        for p in self.source.pieces(self.step, stop - self.step, self.active):
            self.ens.train_steps(p.inputs, p.targets, p.batches, p.batch0, p.n_steps,
                                 lr[:, done: done + p.n_steps], self.wd, self.active,
                                 self.loss_sum, self.clip)
            done += p.n_steps
        self.since_eval += stop - self.step
        self.step = stop
        return self.step % self.eval_every == 0 or any(
            r.status == "running" and stop == r.config.train.max_steps for r in self.runs)

    def evaluate(self) -> list[int]:
        """Validation metrics of the running members into their history and status; returns the
        members to write (stopped now, or at a checkpoint)."""
        metrics = {k: v.tolist() for k, v in
                   self.ens.evaluate(self.data.val_inputs, self.data.val_targets,
                                     active=self.active).items()}
        train_loss = (self.loss_sum / self.since_eval).tolist()
        self.loss_sum.zero_()
        self.since_eval = 0
        elapsed = time.perf_counter() - self.t0
        boundary = self.step // self.checkpoint_every > self.last_eval // self.checkpoint_every
        self.last_eval = self.step
        evaluated = [i for i, run in enumerate(self.runs) if run.status == "running"]
        for i in evaluated:
            m = {"loss": metrics["loss"][i], "acc": metrics["acc"][i],
                 "seq_acc": metrics["seq_acc"][i]}
            _record(self.members[i], self.step, train_loss[i], m, self.data.task.n_val, elapsed,
                    self.early_stop)
        if self.quorum is not None and self.quorum.reached():
            self.quorum.stop(self.runs[i] for i in evaluated)
        for i in evaluated:
            if self.runs[i].status != "running":
                self.active[i] = False
        due = [i for i in evaluated if self.runs[i].status != "running" or boundary]
        if self.tracker is not None:
            self.tracker.log(self.step, [self.runs[i] for i in evaluated])
        return due

    def write(self, due: list[int]) -> None:
        """Members ``due`` take their weights (one host copy); those with a run directory write it."""
        if not due:
            return
        for i, state in zip(due, self.ens.state_dicts(due)):
            self.runs[i].state = state
        on_disk = [i for i in due if self.runs[i].run_dir is not None]
        for i, optim_state in zip(on_disk, self.ens.optimizer_states(on_disk)):
            _write(self.members[i], optim_state)


def _record(member: _Member, step: int, train_loss: float, m: dict[str, float], n_val: int,
            elapsed: float, early_stop: bool = True) -> None:
    """One evaluation of a running member: its history, metrics, and whether it stops here
    (``early_stop`` False: not at its threshold, which it records all the same)."""
    run, tc = member.run, member.run.config.train
    entry = {"step": step, "train_loss": train_loss, "val_loss": m["loss"], "acc": m["acc"],
             "seq_acc": m["seq_acc"]}
    if tc.lr_schedule != "constant":
        entry["lr"] = lr_of_step(step - 1, tc)  # the rate of the step just taken
    run.history.append(entry)
    run.step, run.metrics = step, {**m, "n_val": n_val}
    run.wall_time_s += elapsed
    if step % tc.eval_every == 0:  # train.py's evaluations (not an extra one at max_steps)
        member.patience = member.patience.update(m["acc"])
    if not (math.isfinite(train_loss) and math.isfinite(m["loss"])):
        run.status, run.stop_reason = "failed", "non_finite"
        prev = run.history[-2]["step"] if len(run.history) > 1 else 0
        run.error = (f"diverged: non-finite loss between steps {prev} and {step}"
                     f" (lr {tc.lr:g}); training stopped")
        return
    reached = m["acc"] >= tc.early_stop_acc
    if reached and run.steps_to_threshold is None:
        run.steps_to_threshold = step
    if reached and early_stop:
        run.status, run.stop_reason = "done", "early_stop"
    elif step % tc.eval_every == 0 and member.patience.stops(m["acc"], tc.patience,
                                                               tc.patience_threshold):
        run.status, run.stop_reason = "done", "patience"
    elif step >= tc.max_steps:
        run.status, run.stop_reason = "done", "max_steps"


def _next_stop(step: int, runs: list[Run], eval_every: int, max_steps: int,
               limit: int | None) -> int:
    """The first step after ``step`` at which the loop must look: an evaluation, a running
    member's max_steps, or ``limit`` (when reshuffling, the end of the epoch)."""
    stop = min(max_steps, (step // eval_every + 1) * eval_every)
    for r in runs:
        if r.status == "running" and step < r.config.train.max_steps < stop:
            stop = r.config.train.max_steps
    return stop if limit is None else min(stop, limit)


def _write(member: _Member, optim_state: dict[str, Tensor]) -> None:
    """The member's run directory: weights, run.json and what --resume needs."""
    run = member.run
    assert run.run_dir is not None
    train_state = {f"model.{k}": v for k, v in run.state.items()}
    train_state.update(member.source.state())
    train_state.update({OPTIM_PREFIX + k: v for k, v in optim_state.items()})
    ckpt.write_run(run.run_dir, run.record(), run.state, train_state)


def _progress_bar(enabled: bool, total: int, start: int, n: int):
    if not enabled:
        return None
    from tqdm.auto import tqdm

    desc = "train" if n == 1 else f"train x{n}"
    return tqdm(total=total, initial=start, desc=desc, unit="step", dynamic_ncols=True)


def _update_bar(bar, step: int, runs: list[Run], eval_every: int) -> None:
    if bar is None:
        return
    bar.update(step - bar.n)
    last = [r.history[-1] for r in runs if r.history]
    if len(runs) == 1 and last:
        bar.set_postfix(loss=f"{last[0]['train_loss']:.4f}", acc=f"{last[0]['acc']:.4f}")
    elif last:
        accs = [h["acc"] for h in last]
        running = sum(r.status == "running" for r in runs)
        bar.set_postfix(running=running, best=f"{max(accs):.4f}",
                        median=f"{statistics.median(accs):.4f}")


def summarize(runs: Sequence[Run]) -> dict[str, Any]:
    """Per-seed rows and their aggregate: mean/std acc, fraction at threshold, median steps."""
    rows = [{"seed": r.config.train.seed, "status": r.status, "steps": r.step,
             "steps_to_threshold": r.steps_to_threshold, "acc": r.metrics.get("acc"),
             "seq_acc": r.metrics.get("seq_acc"), "run_dir": str(r.run_dir) if r.run_dir else None}
            for r in runs]
    accs = [row["acc"] for row in rows if row["acc"] is not None]
    reached = [r.steps_to_threshold for r in runs if r.steps_to_threshold is not None]
    return {
        "rows": rows,
        "n": len(runs),
        "acc_mean": statistics.fmean(accs) if accs else None,
        "acc_std": statistics.pstdev(accs) if len(accs) > 1 else 0.0 if accs else None,
        "frac_threshold": len(reached) / len(runs) if runs else None,
        "median_steps_to_threshold": statistics.median(reached) if reached else None,
    }


KEPT_DIR = "kept"  # under an ensemble's output directory: the member --keep chose


def keep(runs: Sequence[Run], rule: KeepRule, out: Path | None = None) -> dict[str, Any] | None:
    """The member ``rule`` keeps (stopping.py: train.py's retry decision over seeds in order), as
    the summary's ``kept`` entry; with ``out``, its model is also written as the run directory
    ``out/kept`` (weights and run.json, loadable like any run). None when nothing is kept."""
    i = rule.choose([r.metrics.get("acc") for r in runs])
    if i is None:
        return None
    run = runs[i]
    kept = {"rule": str(rule), "seed": run.config.train.seed, "acc": run.metrics.get("acc"),
            "member_dir": str(run.run_dir) if run.run_dir is not None else None, "run_dir": None}
    if out is not None:
        kept["run_dir"] = str(Path(out) / KEPT_DIR)
        ckpt.write_run(Path(out) / KEPT_DIR, {**run.record(), "kept": kept}, run.state, None)
    return kept
