"""``listcopy eval``, ``info`` and ``export``: one trained model (a run directory or a seed .pt)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from .args import (UsageError, add_command, add_config_args, check_output_file, path_arg,
                   print_notice)


def register(subparsers) -> None:
    p = add_command(subparsers, "eval", "validation loss, acc and seq_acc of a run or seed .pt",
                    model_path=True)
    add_config_args(p, config_file=False)
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=cmd_eval)

    p = add_command(subparsers, "info", "the parameter overview of a run or seed .pt",
                    model_path=True)
    add_config_args(p, config_file=False)
    p.set_defaults(func=cmd_info)

    p = add_command(subparsers, "export",
                    "write a seed-format .pt (TransformerLens 3.x state dict)", model_path=True)
    p.add_argument("--out", required=True, type=path_arg, metavar="FILE.pt",
                   help="the state dict as torch.save writes it, or as safetensors where FILE "
                        "ends in .safetensors")
    add_config_args(p, config_file=False)
    p.set_defaults(func=cmd_export)


def cmd_eval(args: argparse.Namespace) -> int:
    from ..checkpoint import load
    from ..metrics import evaluate
    from ..resources import guard_analysis
    from ..task import dataset

    model, config = load(args.path, args.set, notice=print_notice, hooks=False)
    guard_analysis(config)
    metrics = evaluate(model, dataset(config))
    if args.json:
        print(json.dumps(metrics))
    else:
        print(f"{config.name}: val loss {metrics['loss']:.5f}  acc {metrics['acc']:.5f}"
              f"  seq_acc {metrics['seq_acc']:.5f}  n_val {metrics['n_val']}")
    return 0


def cmd_info(args: argparse.Namespace) -> int:
    from ..analysis import parameter_table
    from ..checkpoint import load

    model, config = load(args.path, args.set, notice=print_notice, hooks=False)
    print(f"{config.name}")
    for section, table in config.to_dict().items():
        if section != "train":  # what the weights were built for; train settings are not in a .pt
            print(f"  {section}: " + ", ".join(f"{k} {_toml(v)}" for k, v in table.items()))
    print(parameter_table(model).format())
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from ..checkpoint import CheckpointError, export_seed, load, save_tensors
    from ..infer import settings_lost

    out = check_output_file(args.out, "--out")  # before the checkpoint is read
    model, config = load(args.path, args.set, notice=print_notice, hooks=False)
    state = model.state_dict()
    name = config.name + (out.suffix or ".pt")
    lost: list[str] = []
    if out.suffix == ".safetensors":  # the config in its header: it loads back under any name
        save_tensors(out, state, meta={"config": {k: v for k, v in config.to_dict().items()
                                                  if k != "train"}})
    else:
        try:
            lost = settings_lost(state, config, args.out)
        except CheckpointError as err:  # a file that would not load back under this name
            why = str(err).removeprefix(f"{args.out}: ")
            raise UsageError(f"--out {args.out}: would not load back under its name ({why}); "
                             f"name it {name}") from None
        export_seed(state, out)
    print(f"wrote {args.out} ({config.name}, {len(state)} tensors)")
    if lost:
        print_notice(f"{args.out} holds tensors only, and its name does not say "
                     f"{', '.join(lost)}: load it with " + " ".join(f"--set {s}" for s in lost)
                     + f", or name it {name}")
    return 0


def _toml(value) -> str:
    return str(value).lower() if isinstance(value, bool) else str(value)
