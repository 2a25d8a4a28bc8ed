"""``paper_report``: the paper "Order by Scale" reproduced in one call: train (or take) its 2-layer
and 3-layer models, run its analyses, write one offline HTML page and the numbers as JSON.

    >>> from listcopy.paper import paper_report
    >>> paper_report("paper")                                   # trains both models under paper/
    >>> paper_report("paper", models=["runs/2l", "runs/3l"])    # or takes them (by layer count)

Each model is trained into ``OUT/models/NAME`` with ``resume``, so a second call picks up where
the first stopped and a finished model is not trained again. ``overrides`` apply to both models
(a small setting for tests: ``task.n_digits=10``, ``train.max_steps=200``, ...).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Sequence

from ..config import Config, ConfigError
from .settings import MODELS, RESEARCH_VARIANT

FIGURE1_TOLERANCE = 0.01  # the research notebook's Figure 1 call (renorm on)


@dataclass
class PaperInfo:
    """What ``paper_report`` wrote."""

    html: Path
    json: Path
    models: dict[str, Path | None]  # name -> run directory it trained (None: a model given)
    sections: list[str]


def paper_config(name: str, overrides: Sequence[str] = ()) -> Config:
    """The paper's settings of model ``name`` ("2layer" or "3layer"), then ``overrides``."""
    return Config().override([*MODELS[name], *RESEARCH_VARIANT, *overrides])


def paper_analysis(model, config: Config, tolerance: float = FIGURE1_TOLERANCE,
                   umap: bool = True, seed: int = 0) -> dict[str, Any]:
    """Every number and figure of the paper for one model, as one JSON-ready dict: the analyses
    of ``analyze`` it needs (metrics, mean attention, order_by_scale with UMAP, critical edges
    at the notebook's tolerance) and the moderation edge (the last layer's o_L <- o_{L-1})
    ablated with the error taxonomy."""
    from ..analysis.ablation import mean_attention_ablation
    from ..analysis.common import to_json, val_metrics
    from ..analysis.critical import critical_edges
    from ..analysis.edge_sets import ablate_edges
    from ..analysis.order_scale import order_by_scale
    from ..task import dataset

    model.eval()
    data = dataset(config)
    L, n_layers = config.task.list_len, config.model.n_layers
    out: dict[str, Any] = {"name": config.name, "config": config.to_dict(),
                           "metrics": val_metrics(model, data).to_dict()}
    out["mean_attention"] = to_json(mean_attention_ablation(model, config, data))
    out["order_by_scale"] = to_json(order_by_scale(model, config, data, umap=umap, seed=seed))
    out["critical_edges"] = to_json(critical_edges(model, config, data, tolerance=tolerance))
    if L >= 2 and n_layers >= 2:
        moderation = [(n_layers - 1, 2 * L, 2 * L - 1)]
        out["moderation"] = to_json(ablate_edges(model, config, moderation, data=data))
    return out


def _given_models(paths: Iterable[str | Path], overrides: Sequence[str]) -> dict[str, tuple]:
    """Models given by path, keyed "2layer" / "3layer" by their layer count."""
    from ..checkpoint import load

    given: dict[str, tuple] = {}
    for path in paths:
        model, config = load(path, list(overrides))
        name = f"{config.model.n_layers}layer"
        if name not in MODELS:
            raise ConfigError(f"--model {path}: a {config.model.n_layers}-layer model; the "
                              "paper's have 2 and 3 layers")
        if name in given:
            raise ConfigError(f"--model {path}: a second {config.model.n_layers}-layer model")
        given[name] = (model, config)
    return given


def _train(name: str, out_dir: Path, overrides: Sequence[str], progress: bool):
    from ..training import train

    run_dir = out_dir / "models" / name
    config = paper_config(name, overrides)
    run = train(config, run_dir, resume=True, progress=progress)
    return run.model(), config, run_dir


def paper_report(out: str | Path = "paper", models: Iterable[str | Path] = (),
                 overrides: Sequence[str] = (), grid: str | Path | None = None,
                 umap: bool = True, progress: bool = True) -> PaperInfo:
    """Write ``OUT/paper.html`` (Figures 1-4, the numbers of sections 4.1-4.3 beside the paper's,
    Table 4 from the sweep ``grid`` if given) and ``OUT/paper.json`` (every number)."""
    from ..report.output import write_text
    from .page import paper_page

    out_dir = Path(out)
    if out_dir.exists() and not out_dir.is_dir():
        raise ConfigError(f"--out {out_dir}: exists and is not a directory")
    Config().override(list(overrides))  # a bad --set fails before anything runs
    given = _given_models(models, overrides)
    results: dict[str, dict[str, Any]] = {}
    trained: dict[str, Path | None] = {}
    for name in MODELS:
        if name in given:
            (model, config), trained[name] = given[name], None
        else:
            model, config, trained[name] = _train(name, out_dir, overrides, progress)
        results[name] = paper_analysis(model, config, umap=umap)
    page = paper_page(results, grid)
    html, js = out_dir / "paper.html", out_dir / "paper.json"
    write_text(js, json.dumps(results, allow_nan=False) + "\n")
    write_text(html, page.render())
    return PaperInfo(html, js, trained, [s.id for s in page.sections])
