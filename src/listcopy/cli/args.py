"""What several ``listcopy`` commands share: the config options, ``UsageError``, value checks,
the one-line notice of what a checkpoint file's config was inferred as."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..errors import BadInput


class UsageError(BadInput):
    """A command-line value that cannot be used (exit 2, one line)."""


MODEL_PATH_HELP = "run directory or seed .pt file"


def add_command(subparsers, name: str, summary: str, description: str | None = None, *,
                model_path: bool = False) -> argparse.ArgumentParser:
    """One command's parser: ``summary`` is its line in ``listcopy -h``, ``description`` (default:
    the summary) opens its own ``-h``; ``model_path`` adds the positional ``path`` of a trained
    model (a run directory or a seed .pt)."""
    p = subparsers.add_parser(name, help=summary, description=description or summary)
    if model_path:
        p.add_argument("path", help=MODEL_PATH_HELP)
    return p


def add_config_args(p: argparse.ArgumentParser, config_file: bool = True,
                    set_help: str = "override one setting (repeatable), e.g. "
                                    "--set model.d_model=16") -> None:
    """``--config FILE`` (unless ``config_file`` is False) and repeatable ``--set KEY=VALUE``."""
    if config_file:
        p.add_argument("--config", metavar="FILE", help="TOML file with [task], [model], [train]")
    p.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help=set_help)


def load_args_config(args: argparse.Namespace, extra: list[str] | tuple[str, ...] = ()):
    """The config of ``--config`` and ``--set`` (then ``extra`` overrides)."""
    from ..config import load_config

    return load_config(getattr(args, "config", None), [*args.set, *extra])


def add_allow_large(p: argparse.ArgumentParser) -> None:
    """``--allow-large``: lift the policy limits (``resources.Limits``), never the memory check."""
    p.add_argument("--allow-large", action="store_true",
                   help="allow more than 10^6 grid entries, 10^5 seeds or 64 layers (memory is "
                        "still checked)")


def limits(args: argparse.Namespace):
    """The policy limits of a command with ``--allow-large``."""
    from ..resources import Limits

    return Limits.of(getattr(args, "allow_large", False))


def add_val_rows(p: argparse.ArgumentParser, scope: str = "") -> None:
    """``--val-rows N`` (analyze, report): analyses on the first N validation lists only."""
    p.add_argument("--val-rows", type=int, metavar="N",
                   help=f"{scope}only the first N validation lists (a uniform sample: the split "
                        "is shuffled); every ablation is a pass over them (default all)")


def check_val_rows_arg(val_rows: int | None) -> None:
    """``--val-rows N``: absent, or at least 1."""
    if val_rows is not None and val_rows < 1:
        raise UsageError(f"--val-rows {val_rows}: must be >= 1")


THREADS_PER_CPU = 4  # --threads above this many per usable CPU is refused


def check_threads(threads: int | None, option: str = "--threads") -> None:
    """``--threads N``: absent, or from 1 to ``THREADS_PER_CPU`` x the usable CPUs (at least 64)."""
    from ..resources import usable_cpus

    if threads is not None and threads < 1:
        raise UsageError(f"{option} {threads}: must be >= 1")
    most = max(64, THREADS_PER_CPU * usable_cpus())
    if threads is not None and threads > most:
        raise UsageError(f"{option} {threads}: at most {most} on this machine "
                         f"({usable_cpus()} usable CPUs)")


def count_arg(text: str) -> int:
    """An argparse type: an integer >= 0 (``--workers 0``: in this process)."""
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if n < 0:
        raise argparse.ArgumentTypeError(f"{n} must be >= 0")
    return n


def positive_arg(text: str) -> int:
    """An argparse type: an integer >= 1."""
    n = count_arg(text)
    if n < 1:
        raise argparse.ArgumentTypeError(f"{n} must be >= 1")
    return n


def path_arg(text: str) -> str:
    """An argparse type: a path that is not empty (``--out ''`` is a mistake, not the default)."""
    if not text.strip():
        raise argparse.ArgumentTypeError("an empty path")
    return text


def check_backend(backend: str, address: str | None, probe: bool = True) -> None:
    """``--backend`` / ``--address`` of a sweep, before any work: an address only for Ray, of a
    usable form, and (``probe``) one that answers (``ray_backend.check_address``)."""
    from ..sweep.ray_backend import check_address

    if address and backend != "ray":
        raise UsageError("--address needs --backend ray")
    if backend == "ray":
        check_address(address, probe)


def check_output_file(path: str | Path, option: str) -> Path:
    """An output file given on the command line: one that can be written as a file, a pipe or a
    device (``files.check_output``: not a directory, no file where a folder should be, a name that
    fits), refused before any work, exit 2."""
    from ..files import check_output

    check_output(path, option)
    return Path(path)


def check_output_dir(path: str | Path, option: str) -> Path:
    """An output folder given on the command line: a directory if it exists, and no file where
    one of its parents should be (refused before any work, exit 2)."""
    from ..files import file_in_the_way

    path = Path(path)
    if path.exists() and not path.is_dir():
        raise UsageError(f"{option} {path}: exists and is not a directory")
    blocked = file_in_the_way(path)
    if blocked is not None:
        raise UsageError(f"{option} {path}: {blocked} is not a directory")
    return path


def check_run_dir(path: str | Path) -> Path:
    """``--out`` of a training run: an output folder (``check_output_dir``) that is not a sweep's
    (a run's files beside a sweep database would mix the two)."""
    from ..sweep.store import DB_FILE

    path = check_output_dir(path, "--out")
    if (path / DB_FILE).exists():
        raise UsageError(f"--out {path}: holds a sweep ({DB_FILE}), not a training run: give "
                         "another directory")
    return path


def check_sweep_dir(path: str | Path) -> Path:
    """``--out`` of a sweep: an output folder (``check_output_dir``) that holds no training run
    (a sweep's database beside a run's files would mix the two)."""
    from ..checkpoint import holds_run

    path = check_output_dir(path, "--out")
    if holds_run(path):
        raise UsageError(f"--out {path}: holds a training run, not a sweep: give another directory")
    return path


def check_json_arg(json_arg: str | None) -> None:
    """``--json FILE``: a file that can be written (checked before any work); ``-`` is stdout."""
    if json_arg not in (None, "-"):
        check_output_file(json_arg, "--json")


def print_notice(line: str) -> None:
    """What ``load`` inferred for a ``.pt`` file: one line on stderr."""
    print(f"listcopy: {line}", file=sys.stderr)
