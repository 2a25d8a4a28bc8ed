"""What several ``listcopy`` commands share: the config options, ``UsageError``, value checks,
the one-line notice of what a checkpoint file's config was inferred as."""

from __future__ import annotations

import argparse
import sys

from ..errors import BadInput


class UsageError(BadInput):
    """A command-line value that cannot be used (exit 2, one line)."""


def add_config_args(p: argparse.ArgumentParser, config_file: bool = True) -> None:
    """``--config FILE`` (unless ``config_file`` is False) and repeatable ``--set KEY=VALUE``."""
    if config_file:
        p.add_argument("--config", metavar="FILE", help="TOML file with [task], [model], [train]")
    p.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="override one setting (repeatable), e.g. --set model.d_model=16")


def load_args_config(args: argparse.Namespace, extra: list[str] | tuple[str, ...] = ()):
    """The config of ``--config`` and ``--set`` (then ``extra`` overrides)."""
    from ..config import load_config

    return load_config(getattr(args, "config", None), [*args.set, *extra])


def check_threads(threads: int | None) -> None:
    """``--threads N``: absent, or >= 1."""
    if threads is not None and threads < 1:
        raise UsageError(f"--threads {threads}: must be >= 1")


def print_notice(line: str) -> None:
    """What ``load`` inferred for a ``.pt`` file: one line on stderr."""
    print(f"listcopy: {line}", file=sys.stderr)
