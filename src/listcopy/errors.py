"""The one error model: every error listcopy means to report carries its exit status.

    ListcopyError            base: a one-line message and ``exit_code``
      BadInput               exit 2: a value, file or option that cannot be used (a ValueError)
        ConfigError (config.py), CheckpointError (checkpoint.py), UsageError (cli/args.py),
        GridError (sweep/grid.py), StoreError (sweep/store.py)
      Failure                exit 1: the input was fine, the work could not be done (a RuntimeError)
        SweepError, SweepBusy, WorkerDied, RayMissing (sweep/), RunBusy (checkpoint.py)
    Terminated               SIGTERM arrived (a BaseException, like KeyboardInterrupt: no
                             ``except Exception`` records it as a failed run); exit 143

Library code raises; only ``listcopy.cli.main`` catches, prints ``one_line(err)`` and exits with
``err.exit_code``. ``one_line`` is also the formatter for every other message that must fit on
one line (a failed run's error in the sweep database, a file's complaint inside another error).
Nothing here imports torch.
"""

from __future__ import annotations

EXIT_FAILURE = 1
EXIT_BAD_INPUT = 2
EXIT_INTERRUPTED = 130  # 128 + SIGINT
EXIT_TERMINATED = 143   # 128 + SIGTERM


class ListcopyError(Exception):
    """An error with a one-line message and the exit status the ``listcopy`` command ends with.
    A message is made one line (``one_line``) when the error is made, whatever text it names."""

    exit_code = EXIT_FAILURE

    def __init__(self, *args: object):
        if args and isinstance(args[0], str):
            args = (one_line(args[0]), *args[1:])
        super().__init__(*args)


class BadInput(ListcopyError, ValueError):
    """Input that cannot be used: a config value, a file, an option (exit 2)."""

    exit_code = EXIT_BAD_INPUT


class Failure(ListcopyError, RuntimeError):
    """Work that could not be done although its input was good (exit 1)."""

    exit_code = EXIT_FAILURE


class Terminated(BaseException):
    """SIGTERM arrived: raised by ``listcopy.cli.main``'s handler wherever the command was, so
    that what it holds is released (locks, workers) and what it finished stays (writes are atomic)."""


def shown(text: str) -> str:
    """``text`` with every character that is not printable escaped (``\\n``, ``\\x1b``): a name
    from the user (a key, a file name) as it can be shown inside a one-line message."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def one_line(message: object, limit: int | None = None, first_line: bool = False) -> str:
    """``message`` (text or an exception) as one printable line.

    Its lines are joined by one space (each stripped, empty ones dropped); other control characters
    are escaped (``\\x1b``), so a hostile file name cannot break the line; an exception without a
    message gives its class name. ``first_line`` keeps only the first non-empty line (for errors
    that append a traceback); ``limit`` cuts the result to that many characters.
    """
    lines = [line.strip() for line in str(message).splitlines() if line.strip()]
    text = shown(" ".join(lines[:1] if first_line else lines))
    if not text and isinstance(message, BaseException):
        text = type(message).__name__
    return text[:limit] if limit is not None else text
