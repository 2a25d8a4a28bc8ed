"""Training runs: one model or many at once, through one code path (the engine, E >= 1).

Each member follows the seed's random-number discipline on its own generator, seeded with its
``train.seed``: the split's ``randperm`` (a draw the notebook makes before building the model), the
model's init, then the training DataLoader's two int64 draws (the loader's base seed, unused, then the
sampler's seed, which seeds the ``randperm`` of the training set). ``itertools.cycle`` caches the
first epoch, so by default the same ``n_train // batch_size`` batches repeat in the same order;
with ``train.reshuffle`` each new epoch makes the two draws again, as a fresh DataLoader iterator would.

A member stops at the first evaluation where its validation accuracy reaches ``early_stop_acc``,
at ``max_steps``, or at a non-finite loss; stopped members are frozen while the rest go on.

A run directory is locked (``run.lock``) for the whole run. It is checkpointed when a member stops
and at the first evaluation at or after each multiple of ``checkpoint_every`` (evaluations come
every ``eval_every`` steps: with 1,000 and 999 the checkpoints are at 1,000, 2,000, 3,000, ...),
so a resume always starts from an evaluated step. ``resume`` continues a directory's train state
(a new run where the directory holds none of a run's files); it refuses a run whose state is gone
and a config that differs in anything but ``RESUMABLE_KEYS``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import torch
from torch import Tensor

from . import checkpoint as ckpt
from .config import SHARED_TRAIN_KEYS, Config, check_ensemble  # noqa: F401  (keys: re-exported)
from .engine import OPTIMIZER_STATE_KEYS, Ensemble
from .locks import ensure_open_files
from .model import ListCopyTransformer, init_weights
from .task import Dataset, dataset, seed_generator

log = logging.getLogger("listcopy")
OPTIM_PREFIX = "optim."  # train_state.safetensors: the AdamW state's tensors (optim.exp_avg, ...)
GPU_PAYS_OFF_MEMBERS = 128  # about where an ensemble step on a GPU beats the CPU (see notice)


def resolve_device(name: str = "auto") -> torch.device:
    """``auto``: cuda, then mps, then cpu."""
    if name != "auto":
        return torch.device(name)
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


class BatchOrder:
    """One member's batch sequence: the seed's DataLoader(shuffle=True, drop_last=True) order."""

    def __init__(self, generator: torch.Generator, n_train: int, batch_size: int, reshuffle: bool):
        self.generator = generator
        self.n_train, self.batch_size, self.reshuffle = n_train, batch_size, reshuffle
        self.n_batches = n_train // batch_size
        self.epoch = -1
        self.perm: Tensor | None = None

    def epoch_of(self, step: int) -> int:
        """Which epoch's permutation step ``step`` (0-based) draws from."""
        return step // self.n_batches if self.reshuffle else 0

    def batches(self, epoch: int) -> Tensor:
        """Indices into the training set, int64 (n_batches, batch_size), for ``epoch``."""
        while self.epoch < epoch:
            torch.empty((), dtype=torch.int64).random_(generator=self.generator)  # loader base seed
            seed = int(torch.empty((), dtype=torch.int64).random_(generator=self.generator))
            perm = torch.randperm(self.n_train, generator=torch.Generator().manual_seed(seed))
            self.perm = perm[: self.n_batches * self.batch_size].view(self.n_batches, self.batch_size)
            self.epoch += 1
        assert self.perm is not None
        return self.perm

    def state(self) -> dict[str, Tensor]:
        assert self.perm is not None
        return {"rng.generator": self.generator.get_state(), "rng.perm": self.perm,
                "rng.epoch": torch.tensor(self.epoch)}

    def load_state(self, tensors: dict[str, Tensor]) -> None:
        self.generator.set_state(tensors["rng.generator"])
        self.perm = tensors["rng.perm"]
        self.epoch = int(tensors["rng.epoch"])


@dataclass
class Run:
    """One trained model: its config, where it stopped, why, and its metrics history."""

    config: Config
    state: dict[str, Tensor]
    step: int = 0
    status: str = "running"  # running | done | failed
    stop_reason: str | None = None  # early_stop | max_steps | non_finite
    steps_to_threshold: int | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    history: list[dict[str, float]] = field(default_factory=list)
    wall_time_s: float = 0.0
    error: str | None = None
    run_dir: Path | None = None

    @property
    def name(self) -> str:
        return self.config.name

    def model(self) -> ListCopyTransformer:
        model = ListCopyTransformer(self.config)
        model.load_state_dict(self.state)
        return model.eval()

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
    order: BatchOrder
    optim_state: dict[str, Tensor] | None = None  # AdamW moments to resume from


def train(config: Config, out: str | Path | None = None, *, resume: bool = False,
          progress: bool = True) -> Run:
    """Train one model as the seed does; write its run directory to ``out`` if given."""
    return train_ensemble([config], [out] if out is not None else None, resume=resume,
                          progress=progress)[0]


def train_ensemble(configs: Sequence[Config], out_dirs: Sequence[str | Path] | None = None, *,
                   resume: bool = False, progress: bool = True) -> list[Run]:
    """Train several models of one shape at once (one optimiser step for all).

    Members share ``config.task``, ``config.model`` and the train settings in ``SHARED_TRAIN_KEYS``;
    seed, lr, weight_decay, early_stop_acc and max_steps may differ. Returns one Run per config.
    """
    if not configs:
        return []
    check_ensemble(configs)
    dirs = [Path(d) for d in out_dirs] if out_dirs is not None else [None] * len(configs)
    if len(dirs) != len(configs):
        raise ValueError("one output directory per config")
    device = resolve_device(configs[0].train.device)
    notice = small_ensemble_notice(device, len(configs), configs[0].train.device)
    if notice:
        log.warning("listcopy: %s", notice)
    with contextlib.ExitStack() as locks:  # each run directory is ours until training ends
        ensure_open_files(sum(d is not None for d in dirs))
        for d in dirs:
            if d is not None:
                locks.enter_context(ckpt.lock_run_dir(d))
        data = dataset(configs[0]).to(device)
        template = ListCopyTransformer(configs[0])  # re-initialised per member: one module, not E
        members = [_prepare(c, d, resume, template) for c, d in zip(configs, dirs)]
        todo = [m for m in members if m.run.status == "running"]
        for start in sorted({m.run.step for m in todo}):  # members resumed at one step: together
            _train_group([m for m in todo if m.run.step == start], data, device, progress)
    return [m.run for m in members]


def small_ensemble_notice(device: torch.device, n_members: int, requested: str) -> str | None:
    """Where "auto" picked an accelerator for a few models: say that the CPU is faster there.

    A step of these models is a few hundred tiny kernels: on a GPU it is launch-bound (an H100
    took 7.9 ms per step for one model, 8.7 ms for 64 and 15.3 ms for 1,024; benchmarks/README.md),
    while the CPU kernel takes 0.08-0.09 ms per model-step on one thread (5.0 ms for 64). The GPU
    wins from about 128 models at once."""
    if requested != "auto" or device.type == "cpu" or n_members >= GPU_PAYS_OFF_MEMBERS:
        return None
    return (f"training {n_members} model(s) on {device.type}: below about "
            f"{GPU_PAYS_OFF_MEMBERS} models at once a step there is launch-bound and slower than "
            "on the CPU; --set train.device=cpu trains faster")


def _prepare(config: Config, run_dir: Path | None, resume: bool,
             template: ListCopyTransformer) -> _Member:
    """A member: resumed from ``run_dir``'s train state, or new (a fresh directory only)."""
    if run_dir is not None:
        if ckpt.holds_run(run_dir) and not resume:
            raise ckpt.CheckpointError(f"{run_dir}: already holds a run (use --resume or another"
                                       " --out)")
        ckpt.ensure_writable(run_dir)  # fail now, not after the first hour of training
        ckpt.remove_stale_temporaries(run_dir)
        if resume and ckpt.holds_run(run_dir):
            return _resume(config, run_dir)
    task, tc = config.task, config.train
    gen = seed_generator(task, tc.seed)
    init_weights(template, gen)
    state = {k: v.detach().clone() for k, v in template.state_dict().items()}
    order = BatchOrder(gen, task.n_train, config.batch_size, tc.reshuffle)
    order.batches(0)  # the DataLoader iterator is created (and draws) right after make_model()
    return _Member(Run(config, state, run_dir=run_dir), order)


RESUMABLE_KEYS = ("train.max_steps", "train.device")  # what may differ when a run is resumed


def _resume(config: Config, run_dir: Path) -> _Member:
    """The member saved in ``run_dir``'s train state; refused where there is none (a run whose
    state is gone cannot be continued, and is never trained over) or its config differs."""
    if not (run_dir / ckpt.STATE_FILE).exists():
        raise ckpt.CheckpointError(f"{run_dir}: nothing to resume: {ckpt.STATE_FILE} is missing"
                                   " (this run cannot be continued; train into another --out)")
    tensors, meta = ckpt.read_train_state(run_dir)
    changed = config_changes(Config.from_dict(meta["config"]), config)
    if changed:
        raise ckpt.CheckpointError(
            f"{run_dir}: holds a run with another config ({'; '.join(changed[:3])}"
            f"{'; ...' if len(changed) > 3 else ''}): resume with the same --config and --set "
            f"(only {' and '.join(RESUMABLE_KEYS)} may change)")
    state = {k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")}
    run = Run.from_record(meta, state, run_dir)
    run.config, tc = config, config.train
    if run.stop_reason == "max_steps" and run.step < tc.max_steps:  # resumed with more steps
        run.status, run.stop_reason = "running", None
    order = BatchOrder(torch.Generator(), config.task.n_train, config.batch_size, tc.reshuffle)
    order.load_state(tensors)
    optim = {k[len(OPTIM_PREFIX):]: v for k, v in tensors.items() if k.startswith(OPTIM_PREFIX)}
    if set(optim) != set(OPTIMIZER_STATE_KEYS):
        raise ckpt.CheckpointError(f"{run_dir / ckpt.STATE_FILE}: no optimiser state to resume")
    return _Member(run, order, optim)


def config_changes(saved: Config, given: Config) -> list[str]:
    """``key: saved -> given`` for each setting that differs, besides ``RESUMABLE_KEYS``."""
    a, b = saved.flat(), given.flat()
    return [f"{k}: {a[k]!r} there, {b[k]!r} now" for k in a
            if k not in RESUMABLE_KEYS and a[k] != b[k]]


def _train_group(members: list[_Member], data: Dataset, device: torch.device,
                 progress: bool) -> None:
    """Train members resumed at one step together until each has stopped."""
    group = _Group(members, data, device)
    bar = _progress_bar(progress, group.max_steps, group.step, len(members))
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

    def __init__(self, members: list[_Member], data: Dataset, device: torch.device):
        self.members, self.runs, self.data = members, [m.run for m in members], data
        cfg = self.runs[0].config
        self.eval_every, self.checkpoint_every = cfg.train.eval_every, cfg.train.checkpoint_every
        self.ens = Ensemble(cfg, [r.state for r in self.runs], device)
        self.step = self.runs[0].step
        if self.step > 0:
            self.ens.load_optimizer_states([m.optim_state for m in members], self.step)
        exact = torch.float32 if device.type == "mps" else torch.float64  # mps has no float64
        col = lambda xs: torch.tensor(xs, dtype=exact, device=device)  # noqa: E731
        self.lr = col([r.config.train.lr for r in self.runs])
        self.wd = col([r.config.train.weight_decay for r in self.runs])
        self.active = torch.ones(len(self.runs), dtype=torch.bool, device=device)
        self.max_steps = max(r.config.train.max_steps for r in self.runs)
        L = cfg.task.list_len
        self.inputs = data.train_inputs.contiguous()
        self.outputs = data.train_targets[:, L + 1:].contiguous()
        self.epoch, self.batches = -1, torch.empty(0)
        self.loss_sum = torch.zeros(len(self.runs), dtype=exact, device=device)
        self.since_eval, self.t0 = 0, time.perf_counter()
        self.last_eval = self.step  # a checkpoint is due where a multiple of checkpoint_every
        # lies in (last_eval, step]: every boundary gets one, at the first evaluation from it

    def running(self) -> bool:
        return self.step < self.max_steps and any(r.status == "running" for r in self.runs)

    def train_stretch(self) -> bool:
        """The steps up to the next evaluation (or a member's max_steps, or the epoch's end) in
        one call; whether an evaluation is due where they end."""
        order0 = self.members[0].order
        if order0.epoch_of(self.step) != self.epoch:  # all members share n_batches: epochs align
            self.epoch = order0.epoch_of(self.step)
            self.batches = torch.stack([m.order.batches(self.epoch)
                                        for m in self.members]).to(self.active.device)
        stop = _next_stop(self.step, self.runs, self.eval_every, self.max_steps, order0)
        self.ens.train_steps(self.inputs, self.outputs, self.batches, self.step % order0.n_batches,
                             stop - self.step, self.lr, self.wd, self.active, self.loss_sum)
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
        due = []
        for i, run in enumerate(self.runs):
            if run.status != "running":
                continue
            m = {"loss": metrics["loss"][i], "acc": metrics["acc"][i],
                 "seq_acc": metrics["seq_acc"][i]}
            _record(run, self.step, train_loss[i], m, self.data.task.n_val, elapsed)
            if run.status != "running":
                self.active[i] = False
            if run.status != "running" or boundary:
                due.append(i)
        return due

    def write(self, due: list[int]) -> None:
        """Members ``due`` take their weights (one host copy); those with a run directory write it."""
        for i, state in zip(due, self.ens.state_dicts(due)):
            self.runs[i].state = state
        on_disk = [i for i in due if self.runs[i].run_dir is not None]
        for i, optim_state in zip(on_disk, self.ens.optimizer_states(on_disk)):
            _write(self.members[i], optim_state)


def _record(run: Run, step: int, train_loss: float, m: dict[str, float], n_val: int,
            elapsed: float) -> None:
    """One evaluation of a running member: its history, metrics, and whether it stops here."""
    run.history.append({"step": step, "train_loss": train_loss, "val_loss": m["loss"],
                        "acc": m["acc"], "seq_acc": m["seq_acc"]})
    run.step, run.metrics = step, {**m, "n_val": n_val}
    run.wall_time_s += elapsed
    if not (math.isfinite(train_loss) and math.isfinite(m["loss"])):
        run.status, run.stop_reason = "failed", "non_finite"
        prev = run.history[-2]["step"] if len(run.history) > 1 else 0
        run.error = (f"diverged: non-finite loss between steps {prev} and {step}"
                     f" (lr {run.config.train.lr:g}); training stopped")
    elif m["acc"] >= run.config.train.early_stop_acc:
        run.status, run.stop_reason, run.steps_to_threshold = "done", "early_stop", step
    elif step >= run.config.train.max_steps:
        run.status, run.stop_reason = "done", "max_steps"


def _next_stop(step: int, runs: list[Run], eval_every: int, max_steps: int,
               order: BatchOrder) -> int:
    """The first step after ``step`` at which the loop must look: an evaluation, a running
    member's max_steps, or (when reshuffling) the end of the epoch."""
    stop = min(max_steps, (step // eval_every + 1) * eval_every)
    for r in runs:
        if r.status == "running" and step < r.config.train.max_steps < stop:
            stop = r.config.train.max_steps
    if order.reshuffle:
        stop = min(stop, (step // order.n_batches + 1) * order.n_batches)
    return stop


def _write(member: _Member, optim_state: dict[str, Tensor]) -> None:
    """The member's run directory: weights, run.json and what --resume needs."""
    run = member.run
    assert run.run_dir is not None
    train_state = {f"model.{k}": v for k, v in run.state.items()}
    train_state.update(member.order.state())
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
