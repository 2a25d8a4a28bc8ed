"""``listcopy report PATH``: parse, call ``model_report`` or ``sweep_report``, print one line.

PATH is a run directory or a seed ``.pt`` (a model report) or a sweep directory (one holding
``sweep.db``, or that file itself: a sweep report). ``register(subparsers)`` adds the command to
the ``listcopy`` parser; bad input raises (``UsageError``, ``ConfigError``, ``CheckpointError``:
exit 2), and ``listcopy.cli.main`` prints it as one line.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ..cli.args import add_command, add_val_rows


def is_sweep_dir(path: Path) -> bool:
    from ..sweep.store import DB_FILE

    return (path.is_dir() and (path / DB_FILE).is_file()) or (path.is_file() and path.name == DB_FILE)


def default_out(path: Path) -> Path:
    """``RUN_DIR/report.html``, ``SWEEP_DIR/report.html``, or ``FILE.html`` beside a ``.pt``."""
    return path / "report.html" if path.is_dir() else path.with_suffix(".html")


def cmd_report(args: argparse.Namespace) -> int:
    from ..cli.args import UsageError, check_output_file, check_val_rows_arg

    path = Path(args.path)
    out = check_output_file(args.out or default_out(path), "--out")
    progress = not args.quiet
    if is_sweep_dir(path):
        model_only = [flag for flag, used in (("--set", args.set), ("--only", args.only),
                                              ("--no-umap", args.no_umap),
                                              ("--example", args.example is not None),
                                              ("--val-rows", args.val_rows is not None),
                                              ("--sae", args.sae is not None)) if used]
        if model_only:
            raise UsageError(f"{model_only[0]} applies to a model report, and {path} is a sweep")
        from .sweep_report import DEFAULT_AXES, sweep_report

        axes = DEFAULT_AXES if args.axes is None else tuple(a for a in args.axes.split(","))
        info = sweep_report(path, out, axes=axes, png_dir=args.png, progress=progress)
    else:
        if args.axes is not None:
            raise UsageError(f"--axes applies to a sweep directory (one with sweep.db), "
                              f"and {path} is not one")
        check_val_rows_arg(args.val_rows)
        from ..cli.args import print_notice
        from .model_report import model_report

        info = model_report(path, out, png_dir=args.png, progress=progress, overrides=args.set,
                            only=args.only, umap=not args.no_umap, example=args.example or 0,
                            sae=args.sae, notice=print_notice, val_rows=args.val_rows)
    print(f"wrote {info.path} ({info.bytes / 1e6:.1f} MB, {len(info.sections)} sections, "
          f"{len(info.figures)} figures) in {info.seconds['total']:.1f} s")
    if info.pngs:
        print(f"wrote {len(info.pngs)} PNG files to {args.png}")
    return 0


def register(subparsers) -> None:
    """Register ``report`` on the main parser's subparsers."""
    p = add_command(
        subparsers, "report", "an offline HTML report of a model (run or seed .pt) or of a sweep",
        "Write one self-contained HTML page (works offline): for a run directory or "
                    "seed .pt, every analysis drawn; for a sweep directory, its results tables, "
                    "mean accuracy over two axes, every seed and the steps to threshold.")
    p.add_argument("path", metavar="PATH", help="run directory, seed .pt file or sweep directory")
    p.add_argument("--out", metavar="FILE.html",
                   help="output file (default: PATH/report.html, or FILE.html beside a .pt)")
    p.add_argument("--png", metavar="DIR", help="also write every figure as a PNG into DIR")
    p.add_argument("--axes", metavar="A,B",
                   help="sweep: the two settings of the accuracy heatmap "
                        "(default model.d_model,model.n_layers)")
    p.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="model: override a setting that does not change the weights' shapes")
    p.add_argument("--only", metavar="NAMES", help="model: only these analyses (comma-separated)")
    p.add_argument("--no-umap", action="store_true", help="model: skip UMAP (saves ~10-30 s)")
    p.add_argument("--example", type=int, metavar="N",
                   help="model: the validation list shown in the attention and flow figures")
    add_val_rows(p, "model: ")
    p.add_argument("--sae", metavar="DIR",
                   help="model: add a section on this SAE (a listcopy sae train directory or "
                        "the research line's .pt) read on the model")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_report)

