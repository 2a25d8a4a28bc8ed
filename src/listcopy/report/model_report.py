"""The report of one model: every analysis, drawn, on one offline HTML page.

    >>> from listcopy.report import model_report
    >>> model_report("runs/3layer_100dig_8d", "report.html", png_dir="figures")

``path_or_model`` is a run directory, a seed ``.pt`` file, or a model (with ``config=``). The page
has a header (config, parameter table, training curve from the run's metrics history) and one
section per analysis of ``listcopy.analysis.analyze``; ``analysis=`` draws a result computed before
(e.g. ``listcopy analyze --json``) instead of running the analyses again.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

from ..config import Config, ConfigError
from .model_page import build_page
from .output import ReportInfo, Stages, check_out, render_and_write


def model_report(path_or_model: Any, out: str | Path, png_dir: str | Path | None = None,
                 progress: bool = True, *, config: Config | None = None,
                 overrides: Sequence[str] = (), only: str | Iterable[str] | None = None,
                 umap: bool = True, example: int = 0, seed: int = 0,
                 analysis: dict[str, Any] | None = None,
                 history: Sequence[dict[str, Any]] | None = None,
                 notice: Callable[[str], None] | None = None,
                 sae: str | Path | None = None, val_rows: int | None = None) -> ReportInfo:
    """Analyse a model and write its report to ``out`` (atomically); PNGs into ``png_dir``.
    ``notice``: told in one line what a ``.pt`` file's config was inferred as (checkpoint.load);
    ``sae`` (an SAE directory or the line's ``.pt``): its section too; ``val_rows``: analyze on the
    first that many validation lists only (default all)."""
    out = check_out(out, png_dir)
    n_steps = (4 + (len(_names(only)) + 1 if analysis is None else 0) + (png_dir is not None)
               + (sae is not None))
    with Stages("report", n_steps, progress) as stages:
        with stages("load"):
            model, config, run = _resolve(path_or_model, config, overrides, notice)
            if analysis is None:
                from ..analysis.common import large_split_notice
                from ..resources import guard_analysis

                guard_analysis(config)
                if notice and (line := large_split_notice(config, val_rows)):
                    notice(line)
        if history is None:
            history = run.get("history") or []
        if analysis is None:
            from ..analysis import analyze

            stages.show("analyses")
            analysis = analyze(model, config, only=only, progress=stages.done, umap=umap,
                               example=example, seed=seed, bars=progress, val_rows=val_rows)
        if "parameters" not in analysis and model is not None:
            from ..analysis import parameter_table

            analysis = {**analysis, "parameters": parameter_table(model).to_dict()}
        if sae is not None:
            with stages("sae"):
                analysis = {**analysis, "sae": _sae(sae, model, config)}
        with stages("figures"):
            page = build_page(analysis, config, history, run)
        size, pngs = render_and_write(page, out, png_dir, stages)
    return ReportInfo.of(page, out, size, pngs, stages.times)


def _sae(sae: str | Path, model: Any, config: Config) -> dict[str, Any]:
    """``analyze_sae`` of the SAE on the model, where the model is (its device)."""
    from ..sae.run import analyze_sae

    if model is None:
        raise ConfigError("model_report: --sae needs the model itself, not only its analysis")
    device = str(next(model.parameters()).device)
    return analyze_sae(sae, (model, config), device=device)


def _names(only) -> tuple[str, ...]:
    from ..analysis.run import parse_only

    return parse_only(only)


def _resolve(path_or_model: Any, config: Config | None, overrides: Sequence[str],
             notice: Callable[[str], None] | None = None):
    """(model, config, run record) from a path, a (model, config) pair or a model and ``config``."""
    from ..checkpoint import is_run_dir, load, read_run_json

    if isinstance(path_or_model, (str, Path)):
        path = Path(path_or_model)
        model, cfg = load(path, list(overrides), notice)
        run = read_run_json(path) if path.is_dir() and is_run_dir(path) else {}
        return model, cfg, run
    if isinstance(path_or_model, tuple) and len(path_or_model) == 2:
        path_or_model, config = path_or_model
    if config is None:
        raise ConfigError("model_report: a model needs its config (config=...)")
    if overrides:
        config = config.override(list(overrides))
    return path_or_model, config, {}
