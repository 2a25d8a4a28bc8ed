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
input, 1 a runtime failure); so does an ``OSError`` (2 for a path that cannot be used, 1 for a full
or read-only disk) and an allocation that fails although the resource guards
(``listcopy.resources``) let the work start (exit 1); Ctrl-C ends in one line and 130, SIGTERM in
one line and 143. torch is imported only inside commands, so ``--help`` is fast.
"""

from __future__ import annotations

import argparse
import contextlib
import signal
import errno
import os
import sys
import threading
from typing import Iterator, Sequence

from ..errors import (EXIT_BAD_INPUT, EXIT_FAILURE, EXIT_INTERRUPTED, EXIT_TERMINATED,
                      ListcopyError, Terminated, one_line)


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
        with _sigterm_raises():
            return args.func(args)
    except ListcopyError as err:
        return _fail(_label(args), one_line(err), err.exit_code)
    except KeyboardInterrupt:
        print(f"listcopy {_label(args)}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Terminated:
        print(f"listcopy {_label(args)}: terminated (SIGTERM)", file=sys.stderr)
        return EXIT_TERMINATED
    except BrokenPipeError:  # the reader went away (`listcopy results ... | head`): as Unix tools
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no flush error at exit
        return 0
    except OSError as err:  # a path that cannot be used (2), a disk that is full (1)
        return _fail(_label(args), os_error_line(err), os_error_code(err))
    except (MemoryError, RuntimeError) as err:  # what the resource guards did not foresee
        if not out_of_memory(err):
            raise
        why = one_line(err, 300, first_line=True) or type(err).__name__
        return _fail(_label(args), f"out of memory: {why}", EXIT_FAILURE)


def out_of_memory(err: BaseException) -> bool:
    """A failed allocation: ``MemoryError``, or torch's out-of-memory ``RuntimeError``s."""
    if isinstance(err, MemoryError):
        return True
    text = str(err).lower()
    return any(s in text for s in ("out of memory", "can't allocate memory",
                                   "you tried to allocate", "cannot allocate memory"))


# what a path given by the user can be wrong with: exit 2, as any other bad input
BAD_PATH = frozenset({errno.ENOENT, errno.EACCES, errno.EPERM, errno.EISDIR, errno.ENOTDIR,
                      errno.EEXIST, errno.ENAMETOOLONG, errno.ELOOP})


def os_error_code(err: OSError) -> int:
    """2 for a path that cannot be used (missing, no permission, a file in a folder's place, a
    folder in a file's), 1 for the rest (a full disk, a read-only file system, I/O errors)."""
    return EXIT_BAD_INPUT if err.errno in BAD_PATH else EXIT_FAILURE


def os_error_line(err: OSError) -> str:
    """The problem and the user's path (for a rename, where it was going, not the temporary)."""
    path = err.filename2 if err.filename2 is not None else err.filename
    if path is None:
        return one_line(err.strerror or err)
    if err.errno == errno.EEXIST:  # mkdir of a folder that is a file
        return one_line(f"{path}: exists and is not a directory")
    return one_line(f"{err.strerror or err}: {path}")


@contextlib.contextmanager
def _sigterm_raises() -> Iterator[None]:
    """SIGTERM raises ``Terminated`` while a command runs (in the main thread; the previous
    handler is put back after)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def terminated(signum, frame):
        raise Terminated()

    previous = signal.signal(signal.SIGTERM, terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _label(args: argparse.Namespace) -> str:
    """The command as typed: ``train``, or ``sae eval`` for a command with subcommands (their
    parsers set ``subcommand``)."""
    sub = getattr(args, "subcommand", None)
    return f"{args.command} {sub}" if sub else args.command


def _fail(command: str, message: str, code: int) -> int:
    print(f"listcopy {command}: error: {message}", file=sys.stderr)
    return code
