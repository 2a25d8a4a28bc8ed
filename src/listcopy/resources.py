"""Resource guards: what a piece of work needs, what this machine has, and the policy limits.

Checked by every command before it allocates or writes anything; a refusal is one ``TooLarge``
line (exit 2) saying how much is needed and how much there is.

What a training group of E members of one config needs, in bytes (float32 weights, int64 tokens;
P parameters, V vocabulary, D d_model, H heads, N layers, T seq_len, L list_len, B batch):

    parameters     E x P x 4 x PARAM_COPIES: weights, gradients, two AdamW moments, each run's own
                   copy of its weights and the copies the engine takes of the members still running
    dataset        n_lists x T x 8 x 4 (inputs, targets, both shuffled) and the lists it is made from
    member tables  E x n_train x 8 x 3: each member's batch order, the stacked batches, the gathered rows
    training step  E x B lists x (T x D x (5N + 2) + 2 x H x T^2 x N + 3 x L x V) x 4: what the
                   forward pass keeps for the backward pass, the attention patterns and the logits
    evaluation     about 2^17 list-members at once (the engine's evaluation chunk) x
                   (6 x T x D + 2 x H x T^2 + 3 x L x V) x 4

The last two are the engine's torch path; its C kernel (CPU, the seed's constraints, d_model <= 64)
streams examples through small per-thread buffers and needs only the first three.

These are estimates, within a factor of about two of the peak resident memory measured
(``tests/test_resources.py``). On a GPU everything but the dataset's making is counted against
its free memory, the rest against RAM; on the CPU all of it against RAM (``MemAvailable``, or the
control group's limit where that is lower).

Limits that are policy rather than physics (``Limits``: 10^6 grid entries, 10^5 seeds, 64 layers,
whose models take seconds per layer to build) are lifted by ``--allow-large``; memory never is.
Nothing here imports torch at module level.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

from .config import MAX_SEEDS
from .errors import BadInput

if TYPE_CHECKING:
    from .config import Config

FLOAT = 4  # bytes of a float32
INDEX = 8  # bytes of an int64
PARAM_COPIES = 8
EVAL_CHUNK = 1 << 17  # member-lists the engine's torch path evaluates at once on the CPU
KERNEL_MAX_D_MODEL = 64  # the engine's C kernel takes d_model up to this
ANALYSIS_BATCH = 4096  # lists an analysis pass holds at once (analysis.common.BATCH_SIZE)
POINT_BYTES = 2048  # one grid entry while a sweep is planned and recorded (configs, names, rows)
SEED_BYTES = 160  # one seed in a parsed seed list (the int, the tuple slot, the duplicate check)
ALLOW_LARGE = "--allow-large"
MAX_ENTRIES = 1_000_000  # grid entries (specs x axes x seeds) of one sweep
MAX_LAYERS = 64  # building a model takes about 20 ms per layer


class TooLarge(BadInput):
    """Work that needs more memory than this machine has, or more than a policy limit allows
    (exit 2). The message is one line and says how much is needed and how much there is."""


@dataclass(frozen=True)
class Limits:
    """Policy limits (``None``: no limit). ``Limits.of(allow_large)`` is what a command uses."""

    max_entries: int | None = MAX_ENTRIES
    max_seeds: int | None = MAX_SEEDS  # seeds of one ``--seeds`` or a grid's ``seeds``
    max_layers: int | None = MAX_LAYERS

    @classmethod
    def of(cls, allow_large: bool) -> "Limits":
        return cls(None, None, None) if allow_large else cls()


def over_limit(what: str, count: int, limit: int | None, unit: str) -> TooLarge | None:
    """The error for ``count`` above a policy ``limit`` (None when within it)."""
    if limit is None or count <= limit:
        return None
    return TooLarge(f"{what}: {count:,} {unit}; at most {limit:,} unless {ALLOW_LARGE} is given")


def check_model_policy(config: "Config", limits: Limits) -> None:
    """``model.n_layers`` within ``limits.max_layers``."""
    n, most = config.model.n_layers, limits.max_layers
    if most is not None and n > most:
        raise TooLarge(f"model.n_layers = {n}: at most {most} unless {ALLOW_LARGE} is given "
                       "(building a model takes about 20 ms per layer)")


# ---- what work needs -------------------------------------------------------------------------

@dataclass(frozen=True)
class Need:
    """Bytes by part; ``host`` parts stay in RAM even when training runs on a GPU."""

    parts: tuple[tuple[str, int], ...]
    host: frozenset[str] = frozenset()

    @property
    def total(self) -> int:
        return sum(b for _, b in self.parts)

    def on(self, pool: str) -> int:
        """Bytes in ``pool``: "host" (the host-only parts) or "device" (the others)."""
        return sum(b for name, b in self.parts if (name in self.host) == (pool == "host"))

    def __add__(self, other: "Need") -> "Need":
        merged: dict[str, int] = dict(self.parts)
        for name, b in other.parts:
            merged[name] = merged.get(name, 0) + b
        return Need(tuple(merged.items()), self.host | other.host)

    def describe(self, pool: str | None = None) -> str:
        """``parameters 3.2 TB, dataset 9.6 MB`` (largest first, parts under 1% left out)."""
        parts = [(n, b) for n, b in self.parts
                 if pool is None or (n in self.host) == (pool == "host")]
        total = sum(b for _, b in parts) or 1
        shown = sorted((p for p in parts if p[1] >= total / 100), key=lambda p: -p[1])
        return ", ".join(f"{n} {human(b)}" for n, b in shown)


def human(n: float) -> str:
    """``1.5 GB``: decimal units (1 GB = 10^9 bytes)."""
    for unit in ("B", "kB", "MB", "GB", "TB", "PB"):
        if abs(n) < 1000 or unit == "PB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} PB"


def n_parameters(config: "Config") -> int:
    """The model's parameters (frozen ones and zero biases included)."""
    m, t = config.model, config.task
    D, V, T = m.d_model, t.vocab, t.seq_len
    per_layer = 4 * D * D + 3 * D + D  # W_Q, W_K, W_V, W_O; b_Q, b_K, b_V (H x d_head = D); b_O
    if m.ln:
        per_layer += 2 * D
    return V * D + T * D + m.n_layers * per_layer + D * V + V + (2 * D if m.ln else 0)


def _per_list(config: "Config", kept_layers: int, resid_copies: int) -> int:
    """Activation bytes of one list: residual-stream tensors, attention patterns and logits."""
    m, t = config.model, config.task
    T = t.seq_len
    return FLOAT * (T * m.d_model * resid_copies + 2 * m.n_heads * T * T * kept_layers
                    + 3 * t.list_len * t.vocab)


def dataset_need(config: "Config") -> int:
    """The shuffled inputs and targets, and what they are made from (all lists or the sample)."""
    t = config.task
    made_from = (3 * 2 * t.n_lists if t.sampled else t.n_data) * t.list_len * INDEX
    return 4 * t.n_lists * t.seq_len * INDEX + made_from


def streams(config: "Config", device_type: str) -> bool:
    """Whether the engine trains ``config`` with its C kernel, which streams examples through
    per-thread buffers (no activation tensors): on the CPU, with the seed's constraints."""
    m = config.model
    return (device_type == "cpu" and m.d_model <= KERNEL_MAX_D_MODEL and m.freeze_wv
            and m.freeze_wo and not m.use_bias and not m.ln)


def eval_chunk(members: int, device_type: str, batch_size: int) -> int:
    """Validation lists per chunk of the engine's torch-path evaluation. On the CPU about
    ``EVAL_CHUNK`` member-lists (cache-sized: one thread, E = 4096, chunks of 128 lists took 20.6 s
    where chunks of 32 took 16.4). On an accelerator at least a training batch (E x B member-lists,
    no more than a training step holds): each chunk is about 100 kernels launched from Python. At
    E = 8192 on an H200, with chunks of 16 lists, the training loop took 4.7 ms per step more than
    its steps alone (20.5 against 15.8): about 0.47 s per evaluation (every 100 steps) with each
    stretch's bookkeeping. Larger chunks there: unmeasured (no device time was left)."""
    lists = max(1, EVAL_CHUNK // max(members, 1))
    return lists if device_type == "cpu" else max(lists, batch_size)


def training_need(config: "Config", members: int = 1, device_type: str = "cpu") -> Need:
    """What training ``members`` models of ``config``'s shape together needs (see the module)."""
    t, n_layers = config.task, config.model.n_layers
    parts = [("parameters", members * n_parameters(config) * FLOAT * PARAM_COPIES),
             ("dataset", dataset_need(config)),
             ("member tables", members * t.n_train * INDEX * 3)]
    if not streams(config, device_type):
        batch = members * config.batch_size
        eval_lists = min(t.n_val, eval_chunk(members, device_type, config.batch_size)) * members
        parts += [("training step", batch * _per_list(config, n_layers, 5 * n_layers + 2)),
                  ("evaluation", eval_lists * _per_list(config, 1, 6))]
    return Need(tuple(parts), host=frozenset({"dataset"}))


def analysis_need(config: "Config") -> Need:
    """What loading, evaluating and analysing one model of ``config`` needs."""
    n_layers = config.model.n_layers
    batch = min(config.task.n_val, ANALYSIS_BATCH)
    return Need((
        ("parameters", n_parameters(config) * FLOAT * 2),
        ("dataset", dataset_need(config)),
        ("evaluation", batch * _per_list(config, 2 * n_layers, 10 * n_layers + 4)),
    ), host=frozenset({"dataset"}))


def groups_need(groups: Sequence[tuple["Config", int]], parallel: int,
                device_type: str = "cpu") -> Need:
    """Groups (config, members) trained ``parallel`` at a time: the largest ``parallel`` of them."""
    needs = sorted((training_need(c, n, device_type) for c, n in groups), key=lambda n: -n.total)
    total = Need(())
    for need in needs[: max(1, parallel)]:
        total = total + need
    return total


# ---- what this machine has -------------------------------------------------------------------

def available_memory() -> int:
    """Bytes of RAM available now: ``MemAvailable``, capped by a control group's limit."""
    avail = _meminfo_available()
    for limit, used in (("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
                        ("/sys/fs/cgroup/memory/memory.limit_in_bytes",
                         "/sys/fs/cgroup/memory/memory.usage_in_bytes")):
        cap, current = _read_int(limit), _read_int(used)
        if cap is not None and current is not None and cap < 1 << 60:
            avail = min(avail, max(0, cap - current))
    return avail


def _meminfo_available() -> int:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return 1 << 62  # nothing to go by: do not refuse


def _read_int(path: str) -> int | None:
    try:
        return int(Path(path).read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def device_memory(device) -> int | None:
    """Free bytes on a GPU ``device`` (a ``torch.device``); None for the CPU or when unknown."""
    if device.type != "cuda":
        return None
    import torch

    try:
        return int(torch.cuda.mem_get_info(device)[0])
    except (RuntimeError, AssertionError):
        return None


def check_memory(need: Need, what: str, device=None) -> None:
    """``TooLarge`` when ``need`` does not fit: on a GPU ``device`` its parts against the GPU's free
    memory and the host parts against RAM; otherwise all of it against RAM."""
    ram = available_memory()
    gpu = None if device is None else device_memory(device)
    if gpu is None:
        _refuse_over(what, need.total, ram, need.describe(), "of RAM available")
        return
    _refuse_over(what, need.on("host"), ram, need.describe("host"), "of RAM available")
    _refuse_over(what, need.on("device"), gpu, need.describe("device"), f"free on {device}")


def _refuse_over(what: str, needed: int, have: int, parts: str, where: str) -> None:
    if needed > have:
        raise TooLarge(f"{what}: needs about {human(needed)} ({parts}); {human(have)} {where}")


def check_count_memory(what: str, count: int, each: int) -> None:
    """``TooLarge`` when ``count`` items of ``each`` bytes (seeds, grid entries) cannot be held."""
    ram = available_memory()
    if count * each > ram:
        raise TooLarge(f"{what}: {count:,} of them need about {human(count * each)}; "
                       f"{human(ram)} of RAM is available")


def usable_cpus() -> int:
    """CPUs this process may run on (its affinity where the OS tells it)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


# ---- devices -----------------------------------------------------------------------------------

def available_devices() -> list[str]:
    """The devices this torch can use here: ``cpu``, then ``cuda:0`` ..., then ``mps``."""
    import torch

    out = ["cpu"]
    if torch.cuda.is_available():
        out += [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        out.append("mps")
    return out


def check_device(name: str, what: str = "train.device"):
    """The ``torch.device`` that ``name`` (``auto``, ``cpu``, ``cuda``, ``cuda:N``, ``mps``) stands
    for on this machine (``auto``: cuda, then mps, then cpu, as ``training.resolve_device``); a
    ``BadInput`` line naming the devices there are when it has no such device."""
    import torch

    have = available_devices()
    if name == "auto":
        name = next((d for d in ("cuda", "mps") if any(h.startswith(d) for h in have)), "cpu")
    elif name != "cpu" and not (name in have or (name == "cuda" and len(have) > 1
                                                 and have[1].startswith("cuda"))):
        sep = " " if what.startswith("--") else " = "
        raise BadInput(f"{what}{sep}{name!r}: not on this machine (torch {torch.__version__});"
                       f" available: {', '.join(have)}")
    return torch.device(name)


# ---- the guards the commands call ----------------------------------------------------------------

def guard_training(config: "Config", members: int, limits: Limits) -> None:
    """Before ``listcopy train``: the layer limit, the device, and memory for ``members`` at once."""
    guard_groups([(config, members)], 1, limits)


def guard_groups(groups: Sequence[tuple["Config", int]], parallel: int, limits: Limits,
                 what: str | None = None) -> None:
    """Before a sweep or a frontier round: every group's config within the layer limit and on a
    device this machine has; the ``parallel`` largest groups at once in memory."""
    devices = {}
    for config, _ in groups:
        check_model_policy(config, limits)
        if config.train.device not in devices:
            devices[config.train.device] = check_device(config.train.device)
    if not groups:
        return
    device = next(iter(devices.values()))
    if what is None:
        config, members = groups[0]
        what = config.name if members == 1 else f"{members:,} x {config.name} at once"
    check_memory(groups_need(groups, parallel, device.type), what, device)


def guard_analysis(config: "Config") -> None:
    """Before evaluating or analysing one model of ``config`` (on the CPU)."""
    check_memory(analysis_need(config), config.name)
