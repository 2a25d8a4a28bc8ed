"""Run directories (safetensors + JSON), seed ``.pt`` checkpoints, atomic writes.

A run directory holds:

    model.safetensors        the weights, as the seed's state dict (names, shapes, buffers)
    run.json                 config, model name, step, status, metrics, history, package versions
    train_state.safetensors  weights + AdamW moments + the batch generator's state, for --resume
    run.lock                 held (flock) by the process training into it: one writer at a time

Every file is written to a temporary name, flushed to disk and renamed over the old one, so a kill
at any moment leaves each file either the previous complete version or the new one. ``--resume``
reads only ``train_state.safetensors``, which carries its own step and history: one file, one step.
"""

from __future__ import annotations

import hashlib
import io
import json
import platform
import re
from importlib import metadata
from pathlib import Path
from typing import Any, Callable

import torch
from torch import Tensor

from .config import Config, ConfigError
from .errors import BadInput, Failure, one_line
from .files import atomic_write  # noqa: F401  (re-exported: the package's one atomic write)
from .files import probe_folder
from .locks import FolderLock

# The run directory's files, named once (the sweep's workers and driver use these names too).
MODEL_FILE = "model.safetensors"
RUN_FILE = "run.json"
STATE_FILE = "train_state.safetensors"
RUN_FILES = (STATE_FILE, MODEL_FILE, RUN_FILE)  # the order write_run writes them: run.json last
IGNORE_AT_MOST = -1e4  # a saved attention IGNORE value: -inf (TransformerLens 2.x+) or -1e5 (1.x)
LOCK_FILE = "run.lock"  # held by the process training into the directory (locks.py)


class CheckpointError(BadInput):
    """A checkpoint that is missing, corrupt, or does not fit its config (exit 2). One line."""


# ---- atomic writes (files.py) ---------------------------------------------------------------

def write_json(path: Path, data: Any) -> None:
    atomic_write(path, lambda tmp: tmp.write_text(json.dumps(data, indent=1) + "\n"))


def tensors_digest(tensors: dict[str, Tensor]) -> str:
    """sha256 over names, dtypes, shapes and bytes: catches bit flips safetensors cannot see."""
    h = hashlib.sha256()
    for key in sorted(tensors):
        t = tensors[key].detach().cpu().contiguous()
        h.update(f"{key}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def save_tensors(path: Path, tensors: dict[str, Tensor], meta: dict[str, Any] | None = None) -> None:
    """Atomically write a safetensors file whose header carries ``meta`` and a digest of the data."""
    from safetensors.torch import save

    tensors = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
    header = {"sha256": tensors_digest(tensors)}
    if meta is not None:
        header["listcopy"] = json.dumps(meta)
    data = canonical_header(save(tensors, metadata=header))  # written by Python (ENOSPC: OSError)
    atomic_write(path, lambda tmp: tmp.write_bytes(data))


def canonical_header(data: bytes) -> bytes:
    """A safetensors file with its JSON header's keys sorted: safetensors writes the metadata in
    a hash map's order, which differs from process to process (same tensors, different bytes).
    The header stays padded with spaces to a multiple of 8 bytes, as safetensors pads it."""
    n = int.from_bytes(data[:8], "little")
    header = json.dumps(json.loads(data[8:8 + n]), sort_keys=True, separators=(",", ":"))
    header += " " * (-len(header) % 8)
    return len(header).to_bytes(8, "little") + header.encode() + data[8 + n:]


def load_tensors(path: Path, *, signed: bool = False
                 ) -> tuple[dict[str, Tensor], dict[str, Any] | None]:
    """A safetensors file's tensors and listcopy metadata, its sha256 checked where it has one
    (``signed``: a file without one is refused; listcopy writes one into every file)."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as fh:
            tensors = {k: fh.get_tensor(k) for k in fh.keys()}
            header = fh.metadata() or {}
    except FileNotFoundError:
        raise CheckpointError(f"{path}: file not found") from None
    except Exception as err:  # safetensors raises its own error types for corrupt files
        why = one_line(err, 200, first_line=True)
        raise CheckpointError(f"{path}: not a readable safetensors file ({why})") from None
    digest = header.get("sha256")
    if digest is None and signed:
        raise CheckpointError(f"{path}: no sha256 in its header: not written by listcopy, or"
                              " altered")
    if digest is not None and digest != tensors_digest(tensors):
        raise CheckpointError(f"{path}: corrupt (its data does not match its sha256)")
    meta = None
    if "listcopy" in header:
        try:
            meta = json.loads(header["listcopy"])
        except (json.JSONDecodeError, RecursionError):
            raise CheckpointError(f"{path}: corrupt listcopy metadata") from None
    return tensors, meta


def versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for pkg in ("listcopy", "torch", "transformer-lens", "safetensors", "numpy"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            pass
    return out


# ---- state dicts -----------------------------------------------------------------------------

def expected_state(config: Config) -> dict[str, tuple[tuple[int, ...], torch.dtype]]:
    """The seed's state-dict names, shapes and dtypes for ``config``."""
    from .model import ListCopyCore

    return {k: (tuple(v.shape), v.dtype) for k, v in ListCopyCore(config).state_dict().items()}


def check_state_size(state: dict[str, Tensor], config: Config, source: str) -> None:
    """Before a model of ``config`` is built to compare with ``state``: the tensors that fix its
    size (embeddings, unembedding, the number of layers) must match, so that a file name or a
    ``--set`` claiming a huge model costs nothing (``3layer_100dig_100000d.pt`` of a small model)."""
    t, m = config.task, config.model
    for key, shape in (("embed.W_E", (t.vocab, m.d_model)), ("pos_embed.W_pos", (t.seq_len, m.d_model)),
                       ("unembed.W_U", (m.d_model, t.vocab))):
        value = state.get(key)
        if isinstance(value, Tensor) and tuple(value.shape) != shape:
            raise CheckpointError(f"{source}: {key!r} has shape {tuple(value.shape)}, expected"
                                  f" {shape} for {config.name}")
    layers = {int(k.split(".")[1]) for k in state if re.match(r"blocks\.[0-9]+\.", k)}
    missing = next((i for i in range(len(layers) + 1) if i not in layers), 0)
    if missing < m.n_layers and len(layers) < m.n_layers:
        raise CheckpointError(f"{source}: missing tensors of 'blocks.{missing}' for {config.name}"
                              f" ({len(layers)} of {m.n_layers} layers present)")


def check_state_dict(state: dict[str, Tensor], config: Config, source: str) -> None:
    """Raise one ``CheckpointError`` naming ``source`` if ``state`` does not fit ``config``'s model."""
    from .model import is_saved_causal_mask

    check_state_size(state, config, source)
    expected = expected_state(config)
    missing = [k for k in expected if k not in state]
    extra = [k for k in state if k not in expected]
    if missing:
        raise CheckpointError(f"{source}: missing tensor {missing[0]!r} for {config.name}"
                              f" ({len(missing)} missing)")
    if extra:
        raise CheckpointError(f"{source}: unexpected tensor {extra[0]!r} for {config.name}"
                              f" ({len(extra)} unexpected)")
    for key, (shape, dtype) in expected.items():
        value = state[key]
        if not isinstance(value, Tensor):
            raise CheckpointError(f"{source}: {key!r} is not a tensor")
        if key.endswith(".mask"):  # TransformerLens 2.x saves tril(n_ctx), 3.x an empty (0, 0)
            if not is_saved_causal_mask(value, shape[0]):
                raise CheckpointError(f"{source}: {key!r} is not a causal mask")
            continue
        ignore = key.endswith(".IGNORE")
        if ignore and not (value.numel() == 1 and float(value) <= IGNORE_AT_MOST):
            raise CheckpointError(f"{source}: {key!r} must be -inf (or at most {IGNORE_AT_MOST:g},"
                                  " as TransformerLens 1.x saved -1e5)")
        if tuple(value.shape) != shape:
            raise CheckpointError(f"{source}: {key!r} has shape {tuple(value.shape)}, expected"
                                  f" {shape} for {config.name}")
        if value.is_floating_point() != dtype.is_floating_point:
            raise CheckpointError(f"{source}: {key!r} has dtype {value.dtype}, expected {dtype}")
        if value.is_floating_point() and not key.endswith("IGNORE") and not torch.isfinite(value).all():
            raise CheckpointError(f"{source}: {key!r} holds non-finite values")


def check_tensor(tensors: dict[str, Tensor], key: str, shape: tuple[int, ...], dtype: torch.dtype,
                 source: str) -> Tensor:
    """``tensors[key]``, once it is there with ``shape`` and ``dtype`` (a ``CheckpointError``
    naming ``source`` and the key otherwise)."""
    value = tensors.get(key)
    if value is None:
        raise CheckpointError(f"{source}: no {key!r} tensor")
    if tuple(value.shape) != tuple(shape) or value.dtype != dtype:
        raise CheckpointError(f"{source}: {key!r} is {value.dtype} of shape {tuple(value.shape)},"
                              f" expected {dtype} of shape {tuple(shape)}")
    return value


def check_generator_state(tensors: dict[str, Tensor], key: str, source: str) -> None:
    """``tensors[key]`` is a CPU generator's state, as ``torch.Generator.get_state`` gives it."""
    expected = torch.Generator().get_state()
    value = check_tensor(tensors, key, tuple(expected.shape), expected.dtype, source)
    try:
        torch.Generator().set_state(value)
    except RuntimeError:  # "Invalid mt19937 state"
        raise CheckpointError(f"{source}: {key!r} is not a random generator's state") from None


def model_from_state(state: dict[str, Tensor], config: Config, source: str, hooks: bool = True):
    """The model (hooked unless ``hooks`` is False) holding ``state``, once it is checked."""
    from .model import with_weights

    check_state_dict(state, config, source)
    return with_weights(config, state, hooks)


# ---- seed .pt files --------------------------------------------------------------------------

def torch_loadable(head: bytes) -> bool:
    """Whether a file's first 9 bytes are those of a format ``torch.load`` reads: a zip
    (torch.save), a pickle of protocol 2+ (torch's legacy format) or safetensors (a header length,
    then JSON)."""
    return head.startswith(b"PK\x03\x04") or head[:1] == b"\x80" or head[8:9] == b"{"


def load_seed_state(path: Path) -> dict[str, Tensor]:
    """``torch.load(weights_only=True)``: a pickle that carries anything but tensors is refused,
    as is a file of no format torch.load reads (``torch_loadable``)."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(9)
        loadable = torch_loadable(head)
        state = torch.load(path, map_location="cpu", weights_only=True) if loadable else None
    except FileNotFoundError:
        raise CheckpointError(f"{path}: file not found") from None
    except Exception as err:
        raise CheckpointError(f"{path}: refused or unreadable as a weights-only state dict"
                              f" ({one_line(err, 200, first_line=True)})") from None
    if not loadable:
        what = "an empty file" if not head else "not a zip, a pickle or safetensors"
        raise CheckpointError(f"{path}: not a checkpoint ({what})")
    if not isinstance(state, dict) or not all(isinstance(k, str) for k in state):
        raise CheckpointError(f"{path}: not a state dict (a mapping of names to tensors)")
    return state


def export_seed(state: dict[str, Tensor], path: Path) -> None:
    """Write a state dict as the seed does (``torch.save``), loadable by TransformerLens 3.x.
    Saved to memory first: ``torch.save`` to a path names the zip's records after the file, and
    the temporary's name is random (identical exports would differ in bytes)."""
    buffer = io.BytesIO()
    torch.save(dict(state), buffer)
    data = buffer.getvalue()
    atomic_write(Path(path), lambda tmp: tmp.write_bytes(data))


# ---- run directories -------------------------------------------------------------------------

def is_run_dir(path: Path) -> bool:
    return (Path(path) / RUN_FILE).is_file()


def holds_run(path: Path) -> bool:
    """Whether any file of a run is in ``path`` (a run killed before its first run.json too)."""
    return any((Path(path) / name).exists() for name in RUN_FILES)


class RunBusy(Failure):
    """Another process is training into the run directory (exit 1)."""


def lock_run_dir(run_dir: Path) -> FolderLock:
    """``run.lock``, held for the whole run: a second ``train`` into the directory is refused at
    once (whether or not the first has written a checkpoint yet)."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    return FolderLock(run_dir / LOCK_FILE, lambda pid: RunBusy(
        f"{run_dir}: another listcopy process (pid {pid}) is training into this run directory; "
        "wait for it to finish or use another --out"))


def read_run_json(run_dir: Path) -> dict[str, Any]:
    path = Path(run_dir) / RUN_FILE
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise CheckpointError(f"{path}: file not found") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        why = one_line(err, 200, first_line=True)
        raise CheckpointError(f"{path}: corrupt JSON ({why})") from None
    except RecursionError:
        raise CheckpointError(f"{path}: corrupt JSON (nested too deeply)") from None
    if not isinstance(data, dict) or not isinstance(data.get("config"), dict):
        raise CheckpointError(f"{path}: no 'config' table")
    return data


def run_config(run_dir: Path, overrides: tuple[str, ...] | list[str] = ()) -> Config:
    data = read_run_json(run_dir)
    try:
        return Config.from_dict(data["config"]).override(overrides)
    except ConfigError as err:
        raise CheckpointError(f"{Path(run_dir) / RUN_FILE}: {err}") from None


def load(path: str | Path, overrides: tuple[str, ...] | list[str] = (),
         notice: Callable[[str], None] | None = None, *, hooks: bool = True):
    """A model and its config from a run directory or a ``.pt`` / ``.safetensors`` state dict
    (the seed's, the research line's, an export).

    For a run directory the config is the one it was trained with (``overrides`` may change
    settings that do not touch the weights' shapes); so for a safetensors file whose header
    carries one (``listcopy export``); for any other file it is inferred from its tensors, its
    file name and ``overrides`` (infer.py), and ``notice`` (if given) is called with one line
    saying where the config came from. The model is a ``ListCopyTransformer`` (TransformerLens
    hooks and caches), or with ``hooks=False`` a ``ListCopyCore`` (no TransformerLens import).
    """
    from .infer import infer_config

    path = Path(path)
    if path.name == MODEL_FILE and is_run_dir(path.parent):  # a run's weights: its run.json too
        if notice is not None:
            notice(f"{path}: a run's weights, loaded with its config ({path.parent / RUN_FILE})")
        path = path.parent
    if path.is_dir():
        if not holds_run(path):
            raise CheckpointError(f"{path}: a directory with no run in it (no {RUN_FILE}):"
                                  " give a run directory or a checkpoint file")
        config = run_config(path, overrides)
        state, _ = load_tensors(path / MODEL_FILE)
        return model_from_state(state, config, str(path / MODEL_FILE), hooks), config
    if not path.exists():
        raise CheckpointError(f"{path}: no such run directory or checkpoint file")
    state, meta = read_checkpoint_file(path)
    config = header_config(meta, overrides, str(path))
    if config is not None:
        said = f"{path}: {config.name} - the config its header carries"
        said += "; --set " + " ".join(overrides) if overrides else ""
    else:
        inferred = infer_config(state, path.stem, str(path), overrides)
        config, said = inferred.config, inferred.notice
    if notice is not None:
        notice(said)
    return model_from_state(state, config, str(path), hooks), config


def read_checkpoint_file(path: Path) -> tuple[dict[str, Tensor], dict[str, Any] | None]:
    """A checkpoint file's state dict, and for safetensors the listcopy metadata its header
    carries (None where it has none): safetensors through ``load_tensors`` (its sha256 checked
    where it has one), any other file through ``load_seed_state``."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(9)
    except FileNotFoundError:
        raise CheckpointError(f"{path}: file not found") from None
    except OSError as err:
        raise CheckpointError(f"{path}: unreadable ({one_line(err, 200)})") from None
    if head[8:9] == b"{" and not head.startswith(b"PK"):  # a header's length, then its JSON
        return load_tensors(path)
    return load_seed_state(path), None


def header_config(meta: dict[str, Any] | None, overrides: tuple[str, ...] | list[str],
                  source: str) -> Config | None:
    """The config an exported safetensors file's header carries (``export`` writes its task and
    model tables), ``overrides`` applied; None where the header has none (infer.py then)."""
    if meta is None or "config" not in meta:
        return None
    try:
        return Config.from_dict(meta["config"]).override(overrides)
    except ConfigError as err:
        raise CheckpointError(f"{source}: the config in its header: {err}") from None


def ensure_writable(directory: Path) -> None:
    """Create ``directory`` and prove a file can be written there (OSError otherwise)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    probe_folder(directory)


def remove_stale_temporaries(run_dir: Path) -> None:
    """Temporary files a killed writer left behind (never a complete checkpoint file)."""
    for tmp in Path(run_dir).glob(".*.tmp"):
        tmp.unlink(missing_ok=True)


def write_run(run_dir: Path, record: dict[str, Any], state: dict[str, Tensor],
              train_state: dict[str, Tensor] | None) -> None:
    """One checkpoint: the resume state first, then the weights, then run.json (each atomic)."""
    run_dir = Path(run_dir)
    record = {**record, "versions": versions()}
    if train_state is not None:
        save_tensors(run_dir / STATE_FILE, train_state, meta=record)
    _write_weights_and_record(run_dir, record, state)


def _write_weights_and_record(run_dir: Path, record: dict[str, Any],
                              state: dict[str, Tensor]) -> None:
    """A checkpoint's last two writes: the weights, then run.json."""
    save_tensors(run_dir / MODEL_FILE, state, meta={"step": record["step"],
                                                    "name": record.get("name")})
    write_json(run_dir / RUN_FILE, record)


def finish_checkpoint(run_dir: Path, record: dict[str, Any], state: dict[str, Tensor]) -> None:
    """Complete a checkpoint a kill interrupted after its train state (``write_run``'s first
    write): the weights and run.json written from that state's record where they are not at its
    step and status."""
    run_dir = Path(run_dir)
    try:
        current = read_run_json(run_dir)
        from safetensors import safe_open

        with safe_open(str(run_dir / MODEL_FILE), framework="pt") as fh:
            weights_step = json.loads((fh.metadata() or {}).get("listcopy", "{}")).get("step")
        if (current.get("step"), current.get("status"), weights_step) == (
                record["step"], record.get("status"), record["step"]):
            return
    except Exception:  # missing, unreadable or corrupt: rewritten from the train state
        pass
    _write_weights_and_record(run_dir, record, state)


def read_train_state(run_dir: Path) -> tuple[dict[str, Tensor], dict[str, Any]]:
    path = Path(run_dir) / STATE_FILE
    tensors, meta = load_tensors(path, signed=True)
    if not isinstance(meta, dict) or "step" not in meta or "config" not in meta:
        raise CheckpointError(f"{path}: no listcopy resume metadata")
    check_record(meta, str(path))
    return tensors, meta


def check_record(meta: dict[str, Any], source: str) -> None:
    """The fields of a run record that a resume continues from are of the types listcopy writes
    (the sha256 covers the tensors only)."""
    history, number = meta.get("history", []), (int, float)
    fine = {"step": type(meta["step"]) is int and meta["step"] >= 0,
            "wall_time_s": isinstance(meta.get("wall_time_s", 0.0), number),
            "metrics": isinstance(meta.get("metrics", {}), dict),
            "history": isinstance(history, list) and all(
                isinstance(h, dict) and type(h.get("step")) is int
                and isinstance(h.get("acc"), number) for h in history)}
    bad = next((key for key, ok in fine.items() if not ok), None)
    if bad is not None:
        raise CheckpointError(f"{source}: corrupt listcopy metadata ({bad!r} is {meta[bad]!r:.80})")


def safe_name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.=-]+", "_", text)
