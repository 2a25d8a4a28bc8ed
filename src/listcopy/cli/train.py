"""``listcopy train``: one model, or many seeds at once (``--seeds``), and what it prints."""

from __future__ import annotations

import argparse
from pathlib import Path

from .args import (UsageError, add_allow_large, add_command, add_config_args, check_run_dir,
                   check_threads, limits, load_args_config, path_arg)


def register(subparsers) -> None:
    p = add_command(subparsers, "train", "train a model (or many seeds at once)")
    add_config_args(p)
    p.add_argument("--out", type=path_arg, metavar="DIR", help="run directory (default runs/NAME)")
    p.add_argument("--seeds", metavar="SEEDS",
                   help="train these seeds at once: 0-63, 0,3,7 or 0-3,8 (in that order)")
    p.add_argument("--resume", action="store_true", help="continue from the latest checkpoint")
    p.add_argument("--reshuffle", action="store_true",
                   help="reshuffle every epoch (default: cycle the first epoch, as the seed)")
    p.add_argument("--keep", metavar="RULE",
                   help="with --seeds: keep one member, as the research line's retries: best (the"
                        " highest final accuracy) or first:X (the first seed reaching X, else the"
                        " best); written to OUT/kept")
    p.add_argument("--log", metavar="TRACKER",
                   help='log every evaluation to an experiment tracker: wandb (pip install -e'
                        ' ".[wandb]"; WANDB_MODE=offline keeps it local)')
    p.add_argument("--threads", type=int, metavar="N", help="torch CPU threads")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    add_allow_large(p)
    p.set_defaults(func=cmd_train)


def cmd_train(args: argparse.Namespace) -> int:
    config = load_args_config(args, ["train.reshuffle=true"] if args.reshuffle else [])
    check_threads(args.threads)
    seeds = rule = None
    if args.seeds is not None:
        from ..config import parse_seeds

        seeds = parse_seeds(args.seeds, "--seeds", limits(args).max_seeds)
    if args.keep is not None:
        from ..stopping import KeepRule

        if seeds is None:
            raise UsageError("--keep needs --seeds (the members to keep one of)")
        rule = KeepRule.parse(args.keep)
    if args.log is not None:
        from ..tracking import check_tracker

        check_tracker(args.log)
    from ..resources import guard_training

    guard_training(config, len(seeds) if seeds else 1, limits(args))  # before anything is written
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    if seeds is None:
        return _train_one(config, args)
    return _train_seeds(config, seeds, rule, args)


def _train_one(config, args: argparse.Namespace) -> int:
    from ..tracking import open_tracker
    from ..training import train

    out = check_run_dir(args.out or Path("runs") / config.name)
    tracker = open_tracker(args.log, [config], out, config.name)
    run = train(config, out, resume=args.resume, progress=not args.quiet, tracker=tracker)
    if tracker is not None:
        tracker.finish([run])
    print(format_run(run))
    return 0 if run.status == "done" else 1


def _train_seeds(config, seeds: tuple[int, ...], rule, args: argparse.Namespace) -> int:
    from ..checkpoint import write_json
    from ..tracking import open_tracker
    from ..training import keep, summarize, train_ensemble

    out = check_run_dir(args.out or Path("runs") / f"{config.name}-seeds")
    configs = [config.override([f"train.seed={s}"]) for s in seeds]
    tracker = open_tracker(args.log, configs, out, f"{config.name}-seeds")
    runs = train_ensemble(configs, [out / f"seed-{s}" for s in seeds], resume=args.resume,
                          progress=not args.quiet, tracker=tracker)
    summary = summarize(runs)
    if rule is not None:
        summary["kept"] = keep(runs, rule, out)
    write_json(out / "summary.json", summary)
    if tracker is not None:
        tracker.finish(runs, summary)
    print(format_summary(summary, config.train.early_stop_acc))
    print(f"runs and summary.json in {out}")
    if rule is None:
        return 0 if all(r.status == "done" for r in runs) else 1
    return _report_kept(summary["kept"], rule)


def _report_kept(kept: dict | None, rule) -> int:
    """One line on the member --keep chose; exit 1 when none was (no accuracy above 0)."""
    if kept is None:
        print(f"--keep {rule}: no member has an accuracy above 0; nothing kept")
        return 1
    missed = rule.min_acc is not None and kept["acc"] < rule.min_acc
    how = f"no seed reached {rule.min_acc:g}, kept the best" if missed else "kept"
    print(f"--keep {rule}: {how}: seed {kept['seed']} (acc {kept['acc']:.5f}) in {kept['run_dir']}")
    return 0


def format_run(run) -> str:
    """Where one run stopped and why, its validation metrics and time; its directory."""
    m = run.metrics
    how = {"early_stop": f"reached {run.config.train.early_stop_acc:g} at step {run.steps_to_threshold}",
           "max_steps": f"stopped at max_steps {run.step}",
           "patience": f"stopped at step {run.step}: no improvement in"
                       f" {run.config.train.patience} evaluations",
           "non_finite": run.error}.get(run.stop_reason, run.status)
    text = (f"{run.name}: {how}; val loss {m.get('loss', float('nan')):.4f} acc {m.get('acc', 0):.5f}"
            f" seq_acc {m.get('seq_acc', 0):.5f}; {run.wall_time_s:.1f} s")
    return text + (f"\nrun directory: {run.run_dir}" if run.run_dir is not None else "")


def format_summary(summary: dict, threshold: float) -> str:
    """The per-seed table of ``training.summarize`` and its aggregate line."""
    lines = ["| seed | status | steps | steps to threshold | acc | seq_acc |",
             "|---:|---|---:|---:|---:|---:|"]
    for r in summary["rows"]:
        stt = r["steps_to_threshold"] if r["steps_to_threshold"] is not None else "-"
        acc = f"{r['acc']:.5f}" if r["acc"] is not None else "-"
        seq = f"{r['seq_acc']:.5f}" if r["seq_acc"] is not None else "-"
        lines.append(f"| {r['seed']} | {r['status']} | {r['steps']} | {stt} | {acc} | {seq} |")
    mean = summary["acc_mean"]
    med = summary["median_steps_to_threshold"]
    lines.append("")
    lines.append(f"{summary['n']} seeds: acc mean {mean:.5f} std {summary['acc_std']:.5f};"
                 f" {summary['frac_threshold']:.0%} reached {threshold:g}"
                 + (f" (median {med:g} steps)" if med is not None else ""))
    return "\n".join(lines)
