"""``listcopy sae train|eval|analyze``: parse, call one function of ``listcopy.sae.run``, print.

``register(subparsers)`` adds the ``sae`` command to the ``listcopy`` parser (``listcopy.cli``);
errors are raised and end in ``listcopy.cli.main``: bad input (``ConfigError``,
``CheckpointError``) is one line on stderr and exit 2, a failed run (``SAEDiverged``) one line and
exit 1. Nothing heavy is imported until a command runs.

    listcopy sae train MODEL [--hook H] [--pos SEP] [--arch batchtopk] [--d-sae N] [--k K]
                             [--lr LR] [--steps N] [--out DIR]
    listcopy sae eval SAE [--model MODEL] [--json F]
    listcopy sae analyze SAE [--model MODEL] [--factors 0,0.5,2,4] [--latents 3,7] [--json F]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ..cli.args import add_command, add_config_args, check_json_arg

TRAIN_KEYS = ("hook", "positions", "arch", "d_sae", "k", "l1_coefficient", "l0_coefficient", "lr",
              "warmup_steps", "steps", "batch_size", "seed", "split", "device")


def register(subparsers) -> argparse.ArgumentParser:
    """Add ``sae`` (with ``train``, ``eval``, ``analyze``) to ``parser.add_subparsers()``."""
    p = add_command(subparsers, "sae", "sparse autoencoders on a model's activations (SAELens)",
                    "Train, evaluate and study SAEs on a listcopy model "
                    "(needs pip install -e '.[sae]').")
    sub = p.add_subparsers(dest="subcommand", required=True, metavar="SAE_COMMAND")
    t = sub.add_parser("train", help="train an SAE at a hook and positions of a model")
    t.add_argument("model", help="run directory or seed .pt")
    _site_args(t, default_note=" (default blocks.0.hook_resid_post)", pos_note=" (default SEP)")
    t.add_argument("--arch", help="batchtopk (default), topk, jumprelu or standard")
    for flag, kind, text in (("--d-sae", int, "latents (default 100)"),
                             ("--k", int, "active latents, topk/batchtopk (default 4)"),
                             ("--l1-coefficient", float, "standard's L1 penalty (default 1)"),
                             ("--l0-coefficient", float, "jumprelu's L0 penalty (default 1)"),
                             ("--lr", float, "Adam learning rate (default 1e-3)"),
                             ("--warmup-steps", int, "linear warm-up steps (default 0)"),
                             ("--steps", int, "training steps (default 10000)"),
                             ("--batch-size", int, "rows per step (default 1024)"),
                             ("--seed", int, "SAE init and batch order (default 0)")):
        t.add_argument(flag, type=kind, metavar="N", help=text)
    t.add_argument("--split", help="lists whose activations train it: train (default), val, all")
    t.add_argument("--out", metavar="DIR", help="result directory (default runs/sae-MODEL-ARCH-...)")
    t.add_argument("--quiet", action="store_true", help="no progress bar")
    _common(t)
    t.set_defaults(func=cmd_train)
    e = sub.add_parser("eval", help="L0, dead latents, MSE, explained variance, patched accuracy")
    _sae_args(e)
    e.set_defaults(func=cmd_eval)
    a = sub.add_parser("analyze", help="the paper's questions: alignment, graded or binary, swaps,"
                                       " steering")
    _sae_args(a)
    a.add_argument("--factors", metavar="F1,F2", help="steering factors (default 0,0.5,2,4)")
    a.add_argument("--latents", metavar="J1,J2", help="latents to steer (default: all alive)")
    a.set_defaults(func=cmd_analyze)
    return p


def _site_args(p, default_note: str = " (default: the SAE's own)", pos_note: str = "") -> None:
    p.add_argument("--hook", help="hook name" + default_note)
    p.add_argument("--pos", dest="positions", metavar="POS",
                   help="positions: SEP, d1, o2 or indices, comma-separated" + (pos_note or default_note))


def _common(p) -> None:
    add_config_args(p, config_file=False,
                    set_help="override a model setting that does not change its weights' shapes")
    p.add_argument("--device", help="auto (default), cpu, cuda, mps")
    p.add_argument("--threads", type=int, metavar="N", help="torch CPU threads")
    p.add_argument("--json", metavar="FILE", help="write the result as JSON ('-': standard output)")


def _sae_args(p) -> None:
    p.add_argument("sae", help="SAE directory (SAELens format) or a research-line .pt")
    p.add_argument("--model", help="run directory or seed .pt (default: the one the SAE was trained"
                                   " on, as its sae.json records)")
    _site_args(p)
    p.add_argument("--split", default="val", help="lists to evaluate on: val (default), train, all")
    _common(p)


# ---- commands ------------------------------------------------------------------------------

def _prepare(args) -> None:
    """Before any work: --json, --device (as ``listcopy train`` checks it), --threads."""
    from ..config import ConfigError
    from ..resources import check_device

    check_json_arg(args.json)
    if args.device is not None:
        check_device(args.device, "--device")
    if args.threads is not None:
        if args.threads < 1:
            raise ConfigError(f"--threads {args.threads}: must be >= 1")
        import torch

        torch.set_num_threads(args.threads)


def sae_config(args):
    """The SAEConfig the train flags ask for (unset flags keep the defaults)."""
    from .config import SAEConfig

    return SAEConfig.from_dict({k: getattr(args, k) for k in TRAIN_KEYS
                                if getattr(args, k, None) is not None})


def cmd_train(args) -> int:
    _prepare(args)
    config = sae_config(args)
    from ..files import folder_or_nothing
    from .analyze import format_metrics
    from .run import train_sae

    out = Path(args.out) if args.out else Path("runs") / f"sae-{Path(args.model).stem}-{config.name}"
    with folder_or_nothing(out):  # a failed command leaves no SAE behind
        run = train_sae(args.model, config, out, overrides=args.set, progress=not args.quiet)
        _emit(args.json, {"out": str(run.out), **run.metrics, "wall_time_s": run.wall_time_s})
    if args.json != "-":
        print(f"{run.out}: {format_metrics(run.metrics)}; {run.wall_time_s:.1f} s")
    return 0


def cmd_eval(args) -> int:
    _prepare(args)
    from .analyze import format_metrics
    from .run import eval_sae

    result = eval_sae(args.sae, args.model, hook=args.hook, positions=args.positions,
                      split=args.split, overrides=args.set, device=args.device or "auto")
    _emit(args.json, result)
    if args.json != "-":
        print(f"{args.sae} on {result['model_name']} ({result['split']}): {format_metrics(result)}")
    return 0


def cmd_analyze(args) -> int:
    factors = None if args.factors is None else parse_numbers(args.factors, float, "--factors")
    latents = None if args.latents is None else parse_numbers(args.latents, int, "--latents")
    _prepare(args)
    from .analyze import format_summary
    from .run import analyze_sae

    result = analyze_sae(args.sae, args.model, hook=args.hook, positions=args.positions,
                         split=args.split, factors=factors, latents=latents, overrides=args.set,
                         device=args.device or "auto")
    _emit(args.json, result)
    if args.json != "-":
        print(format_summary(result))
    return 0


def parse_numbers(text: str, kind: type, flag: str) -> list:
    """``0,0.5,2`` -> [0.0, 0.5, 2.0]; one line naming the flag otherwise."""
    import math

    from ..config import ConfigError

    try:
        values = [kind(part) for part in text.split(",")]
    except ValueError:
        raise ConfigError(f"{flag} {text!r}: use numbers separated by commas, like 0,2,4") from None
    if not values or not all(math.isfinite(v) for v in values):
        raise ConfigError(f"{flag} {text!r}: use finite numbers separated by commas")
    return values


def _emit(target: str | None, result: dict) -> None:
    if not target:
        return
    text = json.dumps(result, allow_nan=False)
    if target == "-":
        print(text)
        return
    from ..checkpoint import atomic_write

    atomic_write(Path(target), lambda tmp: tmp.write_text(text + "\n"))
