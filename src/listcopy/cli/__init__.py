"""The ``listcopy`` command: one parser that each command's module registers on, and ``main``.

    train.py     listcopy train             one model, or many seeds at once
    model.py     listcopy eval/info/export  one trained model (run directory or seed .pt)
    frontier.py  listcopy frontier          the capacity frontier
    bench.py     listcopy bench             training speed against the notebook's loop
    args.py      what several commands share: --config/--set, UsageError, value checks
  registered from their own packages:
    analysis/cli.py  listcopy analyze
    report/cli.py    listcopy report
    sweep/cli.py     listcopy sweep, listcopy results

Each command module has ``register(subparsers)``: it adds its parser(s) with ``func`` set to a
command that parses, calls one library function, prints, and raises on bad input. ``main`` is the
one place that catches: a ``ListcopyError`` becomes one line on stderr and its exit status (2 bad
input, 1 a runtime failure). torch is imported only inside commands, so ``--help`` is fast.
"""

from __future__ import annotations

import argparse
import sys
from typing import Sequence

from ..errors import EXIT_FAILURE, EXIT_INTERRUPTED, ListcopyError, one_line


def registrars():
    """Each command module's ``register``, in the order ``listcopy --help`` lists them."""
    from ..analysis import ablate_cli as ablate
    from ..analysis import cli as analyze
    from ..paper import cli as paper
    from ..report import cli as report
    from ..sae import cli as sae
    from ..sweep import cli as sweep
    from . import bench, frontier, model, train

    return (train.register, model.register, analyze.register, ablate.register, report.register,
            paper.register, sweep.register, frontier.register, bench.register, sae.register)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="listcopy",
        description="Train and study attention-only transformers that copy a list through SEP.")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for register in registrars():
        register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; its errors end here as one line and an exit status."""
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except ListcopyError as err:
        return _fail(_label(args), one_line(err), err.exit_code)
    except KeyboardInterrupt:
        print(f"listcopy {_label(args)}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except OSError as err:  # a disk that is full, a directory that is read-only
        where = f": {err.filename}" if err.filename else ""
        return _fail(_label(args), one_line(f"{err.strerror or err}{where}"), EXIT_FAILURE)


def _label(args: argparse.Namespace) -> str:
    """The command as typed: ``train``, or ``sae eval`` for a command with subcommands (their
    parsers set ``subcommand``)."""
    sub = getattr(args, "subcommand", None)
    return f"{args.command} {sub}" if sub else args.command


def _fail(command: str, message: str, code: int) -> int:
    print(f"listcopy {command}: error: {message}", file=sys.stderr)
    return code
