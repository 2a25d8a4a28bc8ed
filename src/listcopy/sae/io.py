"""SAE files: SAELens' own format (ours), and the research line's ``torch.save`` checkpoints.

Ours is SAELens' directory (``cfg.json`` + ``sae_weights.safetensors``, written by its
``save_model`` and read by ``SAE.load_from_disk``), each file put in place atomically, plus
``sae.json`` (listcopy's record: config, site, metrics, and a sha256 of the weights, checked on load).

The line's files (dictionary_learning's BatchTopK, trained on activations centred by ``act_mean``)::

    {"state_dict": {"encoder.weight" (d_sae, d), "encoder.bias" (d_sae), "decoder.weight" (d, d_sae),
                    "b_dec" (d), "threshold" (scalar), "k"}, "cfg": {"dict_size" or "d_sae", ...},
     "act_mean" (d)}
    z = relu((x - act_mean - b_dec) W_enc^T + b_enc), kept where z > threshold
    x_hat = z W_dec^T + b_dec + act_mean

are read with ``torch.load(weights_only=True)`` (no code from the file runs) and become the SAELens
JumpReLU SAE that computes exactly that: ``W_enc = encoder.weight^T``, ``W_dec = decoder.weight^T``,
``b_dec + act_mean`` as SAELens' ``b_dec`` (it subtracts ``b_dec`` before encoding and adds it after
decoding), and the threshold on every latent. Either way every SAE is evaluated by the same code.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from ..checkpoint import CheckpointError, atomic_write, write_json
from ..config import ConfigError
from ..errors import one_line
from ..files import folder_or_nothing
from .site import DEFAULT_HOOK

RECORD_FILE = "sae.json"
LINE_SOURCE = "dictionary_learning BatchTopK (research line)"


def _why(err: BaseException) -> str:
    """An exception's first line (at most 200 characters), or its class name."""
    return one_line(err, limit=200, first_line=True)


def sae_lens():
    """The ``sae_lens`` module, or one line saying how to install it."""
    try:
        import sae_lens
    except ImportError:
        raise ConfigError("SAEs need SAELens: pip install -e '.[sae]'") from None
    return sae_lens


@dataclass
class LoadedSAE:
    """An inference SAE (SAELens) and where it was trained to read (hook, positions or labels)."""

    sae: Any
    hook: str
    positions: Any
    source: str
    path: str
    record: dict | None = None

    @property
    def d_in(self) -> int:
        return int(self.sae.cfg.d_in)

    @property
    def d_sae(self) -> int:
        return int(self.sae.cfg.d_sae)


# ---- ours: SAELens directories ----------------------------------------------------------------

def file_sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def save_sae(sae, out: Path, record: dict[str, Any]) -> None:
    """Write ``sae`` with SAELens' ``save_model`` and ``record`` as sae.json, each file atomically;
    a folder this made is removed again where a write fails."""
    out = Path(out)
    with folder_or_nothing(out):
        out.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=".sae.", dir=out))
        try:
            weights, cfg = sae.save_model(tmp)
            for src in (weights, cfg):
                atomic_write(out / src.name, lambda t, src=src: shutil.copyfile(src, t))
            write_json(out / RECORD_FILE,
                       {**record, "weights_sha256": file_sha256(out / weights.name)})
        finally:
            shutil.rmtree(tmp, ignore_errors=True)


def existing_sae(path: str | Path) -> Path:
    """``path``, or ``CheckpointError`` (one line) where there is nothing there."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"{path}: no such SAE directory or checkpoint file")
    return path


def load_sae(path: str | Path, device: str | torch.device = "cpu") -> LoadedSAE:
    """An SAE from a SAELens directory or a line ``.pt``; ``CheckpointError`` (one line) if broken."""
    path = existing_sae(path)
    if path.is_dir():
        return _load_dir(path, str(device))
    return _load_line(path, device)


def _load_dir(path: Path, device: str) -> LoadedSAE:
    lens = sae_lens()
    from sae_lens.constants import SAE_CFG_FILENAME, SAE_WEIGHTS_FILENAME

    for name in (SAE_CFG_FILENAME, SAE_WEIGHTS_FILENAME):
        if not (path / name).is_file():
            raise CheckpointError(f"{path}: no {name} (not a SAELens SAE directory)")
    record = read_record(path)
    if record is not None and record.get("weights_sha256") not in (None,
                                                                   file_sha256(path / SAE_WEIGHTS_FILENAME)):
        raise CheckpointError(f"{path / SAE_WEIGHTS_FILENAME}: corrupt (does not match the sha256"
                              f" in {RECORD_FILE})")
    try:
        json.loads((path / SAE_CFG_FILENAME).read_text())
        sae = lens.SAE.load_from_disk(path, device=device)
    except Exception as err:  # SAELens raises many types for a bad config or weights file
        raise CheckpointError(f"{path}: not a readable SAELens SAE ({_why(err)})") from None
    _check_finite(sae, path)
    meta = sae.cfg.metadata
    return LoadedSAE(sae.eval(), meta.get("hook_name") or DEFAULT_HOOK,
                     meta.get("positions") or "SEP", "saelens", str(path), record)


def read_record(path: Path) -> dict | None:
    """An SAE directory's sae.json (None where it has none); one line where it is corrupt."""
    file = path / RECORD_FILE
    if not file.exists():
        return None
    try:
        record = json.loads(file.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError, OSError) as err:
        raise CheckpointError(f"{file}: corrupt JSON ({_why(err)})") from None
    if not isinstance(record, dict):
        raise CheckpointError(f"{file}: not a JSON object")
    return record


def _check_finite(sae, path) -> None:
    for name, value in sae.state_dict().items():
        if value.is_floating_point() and not torch.isfinite(value).all():
            raise CheckpointError(f"{path}: {name!r} holds non-finite values")


# ---- the research line's .pt files ---------------------------------------------------------

def _load_line(path: Path, device) -> LoadedSAE:
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise CheckpointError(f"{path}: refused or unreadable as a weights-only SAE checkpoint"
                              f" ({_why(err)})") from None
    sae = line_to_saelens(ckpt, str(path)).to(device)
    return LoadedSAE(sae.eval(), DEFAULT_HOOK, "SEP", LINE_SOURCE, str(path))


def line_to_saelens(ckpt: Any, source: str):
    """The SAELens JumpReLU SAE equal to a line checkpoint (see the module docstring)."""
    parts = _line_parts(ckpt, source)
    d_sae, d = parts["encoder.weight"].shape
    lens = sae_lens()
    cfg = lens.JumpReLUSAEConfig(d_in=d, d_sae=d_sae, metadata=lens.saes.sae.SAEMetadata(
        hook_name=DEFAULT_HOOK, positions="SEP", source=LINE_SOURCE))
    sae = lens.JumpReLUSAE(cfg)
    threshold = parts["threshold"].reshape(-1).expand(d_sae)
    state = {"W_enc": parts["encoder.weight"].T, "b_enc": parts["encoder.bias"],
             "W_dec": parts["decoder.weight"].T, "b_dec": parts["b_dec"] + parts["act_mean"],
             "threshold": threshold}
    sae.load_state_dict({k: v.float().contiguous() for k, v in state.items()})
    return sae


def _line_parts(ckpt: Any, source: str) -> dict[str, Tensor]:
    """The line checkpoint's tensors, checked: names, types, consistent shapes, finite values."""
    if not isinstance(ckpt, dict) or not isinstance(ckpt.get("state_dict"), dict):
        raise CheckpointError(f"{source}: not an SAE checkpoint (no 'state_dict' table)")
    state = ckpt["state_dict"]
    if "W_enc" in state:
        raise CheckpointError(f"{source}: the legacy W_enc/W_dec layout is not supported")
    enc = _tensor(state, "encoder.weight", source, dim=2)
    d_sae, d = enc.shape
    if not d_sae or not d:
        raise CheckpointError(f"{source}: 'encoder.weight' has shape {tuple(enc.shape)}: no "
                              "latents or no input")
    parts = {"encoder.weight": enc,
             "encoder.bias": _tensor(state, "encoder.bias", source, shape=(d_sae,)),
             "decoder.weight": _tensor(state, "decoder.weight", source, shape=(d, d_sae)),
             "b_dec": _tensor(state, "b_dec", source, shape=(d,)),
             "threshold": _tensor(state, "threshold", source)}
    if parts["threshold"].numel() not in (1, d_sae):
        raise CheckpointError(f"{source}: 'threshold' must be one number or one per latent")
    parts["act_mean"] = (_tensor(ckpt, "act_mean", source, shape=(d,)) if "act_mean" in ckpt
                         else torch.zeros(d))
    cfg = ckpt.get("cfg", {})
    if not isinstance(cfg, dict):
        raise CheckpointError(f"{source}: 'cfg' is not a table")
    size = cfg.get("dict_size", cfg.get("d_sae", d_sae))
    if size != d_sae:
        raise CheckpointError(f"{source}: cfg says {size} latents, the weights have {d_sae}")
    return parts


def _tensor(table: dict, key: str, source: str, shape: tuple | None = None,
            dim: int | None = None) -> Tensor:
    value = table.get(key)
    if not isinstance(value, Tensor) or not value.is_floating_point():
        raise CheckpointError(f"{source}: missing or non-float tensor {key!r}")
    if shape is not None and tuple(value.shape) != shape:
        raise CheckpointError(f"{source}: {key!r} has shape {tuple(value.shape)}, expected {shape}")
    if dim is not None and value.dim() != dim:
        raise CheckpointError(f"{source}: {key!r} must be a matrix, got shape {tuple(value.shape)}")
    if not torch.isfinite(value).all():
        raise CheckpointError(f"{source}: {key!r} holds non-finite values")
    return value
