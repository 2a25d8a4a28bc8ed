"""Entry points from paths, as the CLI (and later a sweep) calls them: train, eval, analyze.

``train_sae(model, config, out)`` is one function of (model path, SAE config) -> result directory
+ metrics: it reads the model's activations at the site over the config's split, fits the SAE,
evaluates it on the validation lists and writes the result directory (SAELens' files + sae.json).
``eval_sae`` and ``analyze_sae`` take an SAE (ours or the line's) and a model. A model is a run
directory, a seed ``.pt`` or an already loaded ``(model, config)`` pair; for an SAE that
``train_sae`` wrote it defaults to the model recorded in its sae.json (an absolute path).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any, Sequence

from ..analysis.common import to_json
from ..checkpoint import load, versions
from ..config import Config, ConfigError
from ..files import check_folder
from ..task import dataset
from ..training import resolve_device
from .activations import collect, split_data
from .config import SAEConfig
from .io import LoadedSAE, existing_sae, load_sae, read_record, save_sae
from .metrics import evaluate_sae
from .site import Site, check_site

ModelRef = str | Path | tuple


@dataclass
class SAERun:
    """A trained SAE: where it was written (if anywhere), its settings, site, metrics, training."""

    out: Path | None
    config: SAEConfig
    site: Site
    metrics: dict[str, Any]
    training: dict[str, Any]
    sae: Any
    wall_time_s: float


def load_model(model: ModelRef, overrides: Sequence[str] = (), device: str = "cpu"):
    """(model, config) from a path or an already loaded pair, in eval mode on ``device``."""
    if isinstance(model, tuple):
        net, config = model
    else:
        net, config = load(model, overrides)
    if not isinstance(config, Config):
        raise ConfigError("model must be a run directory, a seed .pt or a (model, Config) pair")
    return net.to(resolve_device(device)).eval(), config


def resolve_site(net, config: Config, hook: str, positions) -> tuple[Site, int]:
    site = Site.parse(hook, positions, config.task)
    return site, check_site(net, site)


def train_sae(model: ModelRef, config: SAEConfig = SAEConfig(), out: str | Path | None = None, *,
              overrides: Sequence[str] = (), progress: bool = False) -> SAERun:
    """Fit an SAE on the model's activations at ``config``'s site; evaluate it; write it to ``out``."""
    from .train import fit_sae

    start = time.perf_counter()
    net, mconfig = load_model(model, overrides, config.device)
    site, _ = resolve_site(net, mconfig, config.hook, config.positions)
    if out is not None:
        check_folder(out, str(out))  # before the work, not after it; made only at the end
    data = dataset(mconfig)
    acts = collect(net, split_data(data, config.split)[0], site)
    sae, training = fit_sae(acts, config, {"hook_name": site.hook, "positions": list(site.positions),
                                           "model_name": mconfig.name}, progress)
    metrics = to_json(evaluate_sae(net, sae, site, data, "val"))
    wall = time.perf_counter() - start
    if out is not None:
        record = {"model": str(Path(model).resolve()) if not isinstance(model, tuple) else None,
                  "model_name": mconfig.name, "model_config": mconfig.to_dict(),
                  "sae_config": config.to_dict(), "site": site.to_dict(),
                  "site_label": site.label(mconfig.task), "metrics": metrics,
                  "training": to_json(training), "wall_time_s": wall, "versions": _versions()}
        save_sae(sae, Path(out), record)
    return SAERun(Path(out) if out is not None else None, config, site, metrics, training, sae, wall)


def _versions() -> dict[str, str]:
    out = versions()
    try:
        out["sae-lens"] = metadata.version("sae-lens")
    except metadata.PackageNotFoundError:
        pass
    return out


def recorded_model(sae_path: str | Path) -> Path:
    """The model an SAE that ``train_sae`` wrote was trained on (its sae.json's ``model``); one
    line naming the SAE where there is none or it is gone."""
    path = existing_sae(sae_path)
    record = read_record(path) if path.is_dir() else None
    model = (record or {}).get("model")
    if not isinstance(model, str) or not model:
        raise ConfigError(f"{path}: no model is recorded with this SAE (one listcopy did not"
                          " train): give --model")
    if not Path(model).exists():
        raise ConfigError(f"{path}: the model it was trained on, {model}, is not there any more:"
                          " give --model")
    return Path(model)


def open_pair(sae_path: str | Path, model: ModelRef | None, hook: str | None = None,
              positions=None, overrides: Sequence[str] = (), device: str = "auto"):
    """(net, config, loaded SAE, site), with the SAE's width checked against the site's;
    ``model`` None: the one recorded with the SAE."""
    if model is None:
        model = recorded_model(sae_path)
    net, config = load_model(model, overrides, device)
    loaded: LoadedSAE = load_sae(sae_path, next(net.parameters()).device)
    site, width = resolve_site(net, config, hook or loaded.hook,
                               positions if positions is not None else loaded.positions)
    if loaded.d_in != width:
        raise ConfigError(f"{sae_path}: this SAE reads {loaded.d_in}-wide activations, but"
                          f" {site.hook} of {config.name} is {width} wide")
    return net, config, loaded, site


def eval_sae(sae_path: str | Path, model: ModelRef | None = None, *, hook: str | None = None,
             positions=None, split: str = "val", overrides: Sequence[str] = (),
             device: str = "auto") -> dict:
    """The line's metrics of an SAE on a model: L0, dead, MSE, explained variance, accuracies."""
    net, config, loaded, site = open_pair(sae_path, model, hook, positions, overrides, device)
    result = evaluate_sae(net, loaded.sae, site, dataset(config), split)
    return to_json({**result, "sae": str(sae_path), "source": loaded.source,
                    "model_name": config.name, "site": site.to_dict()})


def analyze_sae(sae_path: str | Path, model: ModelRef | None = None, *,
                hook: str | None = None, positions=None, split: str = "val",
                factors: Sequence[float] | None = None, latents: Sequence[int] | None = None,
                overrides: Sequence[str] = (), device: str = "auto") -> dict:
    """The paper's questions of an SAE on a model (see ``listcopy.sae.analyze``)."""
    from .analyze import analyze
    from .steering import FACTORS

    net, config, loaded, site = open_pair(sae_path, model, hook, positions, overrides, device)
    result = analyze(net, loaded.sae, site, dataset(config), split,
                     FACTORS if factors is None else factors, latents)
    return {**result, "sae": str(sae_path), "source": loaded.source, "model_name": config.name}
