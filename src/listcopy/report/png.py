"""Figures as PNG files (for papers) through kaleido, driving the system's Chromium.

Kaleido 1.x renders with a Chrome it finds on the machine; it is given the path explicitly
(``BROWSER_PATH``, else ``chromium`` / ``chromium-browser`` / ``google-chrome`` on ``PATH``), the
plotly.js of the installed plotly package and no MathJax, behind a dead proxy: nothing is fetched,
and no browser is ever downloaded (``kaleido.get_chrome`` is never called). All figures are drawn
in one browser session; each file is written atomically.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import os
import shutil
from pathlib import Path
from typing import Sequence

from ..config import ConfigError
from ..errors import Failure, one_line
from .html import Figure

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
DEAD_PROXY = "127.0.0.1:9"  # discard port: any request the page might make fails at once
SCALE = 2                    # pixels per CSS pixel: sharp enough for print
DEFAULT_WIDTH = 1100
QUIET_LOGGERS = ("choreographer", "kaleido", "chrome_wrapper")  # the browser libraries' own loggers
START_S = 60.0               # the browser's start, at most (a slow, loaded machine starts it in ~2 s)
FIGURE_S = 90.0              # one figure, at most (kaleido's own per-figure bound)
STALE_PAGE = "kaleido_scopes is not defined"  # a tab answering from the page before the renderer
STALE_PAGE_TRIES = 3


def find_browser() -> str:
    """The Chromium to render with: ``BROWSER_PATH`` if set, else the first on ``PATH``."""
    path = os.environ.get("BROWSER_PATH")
    if path:
        if not Path(path).is_file():
            raise ConfigError(f"BROWSER_PATH={path}: no such file (PNG export needs Chromium)")
        return path
    for name in BROWSERS:
        found = shutil.which(name)
        if found:
            return found
    raise ConfigError("--png needs Chromium: install it (apt-get install chromium) or set "
                      "BROWSER_PATH to a Chrome or Chromium binary")


def check_tmpdir() -> None:
    """Chromium keeps its profile under ``TMPDIR``: one that is not a writable directory is
    refused here, not after the browser fails to start (dozens of lines from three libraries)."""
    tmp = os.environ.get("TMPDIR")
    if tmp and not (Path(tmp).is_dir() and os.access(tmp, os.W_OK | os.X_OK)):
        raise ConfigError(f"TMPDIR={tmp}: not a writable directory (--png starts Chromium, which "
                          "needs one); create it or unset TMPDIR")


def check_png_output(out_dir: str | Path) -> str:
    """What ``--png DIR`` needs, checked before any work: a folder (or a name for one) that
    takes new files (``files.check_folder``), Chromium and kaleido. The browser's path."""
    from ..files import check_folder

    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise ConfigError(f"--png {out_dir}: exists and is not a directory")
    check_folder(out_dir, f"--png {out_dir}")
    browser = find_browser()
    check_tmpdir()
    try:
        import kaleido  # noqa: F401
    except ImportError:
        raise ConfigError("--png needs kaleido: pip install kaleido") from None
    return browser


def write_pngs(figures: Sequence[Figure], out_dir: str | Path, scale: float = SCALE,
               timeout_s: float | None = None) -> list[Path]:
    """Write each figure to ``out_dir/<id>.png``; the paths, in order.

    The browser gets ``timeout_s`` for all of it (default: ``START_S`` plus ``FIGURE_S`` per
    figure): a browser that dies as it starts can leave the browser library waiting for an answer
    that never comes, which is a one-line failure here, not a hang."""
    browser = check_png_output(out_dir)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if timeout_s is None:
        timeout_s = START_S + FIGURE_S * len(figures)
    try:
        with _quiet_browser_logs():
            images = _run(_bounded(_render(figures, browser, scale), timeout_s))
    except Exception as err:  # noqa: BLE001  (kaleido and the browser raise their own types)
        why = err.args[0] if err.args and isinstance(err.args[0], str) else err
        raise Failure(f"--png: the browser ({browser}) could not draw the figures: "
                      f"{one_line(why, 300, first_line=True) or type(err).__name__}") from None
    from ..checkpoint import atomic_write

    paths = []
    for f, data in zip(figures, images):
        path = out_dir / f"{f.id}.png"
        atomic_write(path, lambda tmp, data=data: tmp.write_bytes(data))
        paths.append(path)
    return paths


@contextlib.contextmanager
def _quiet_browser_logs():
    """The browser libraries log their own warnings to stderr (``Wait expired, Browser is being
    closed by watchdog``) before they raise: silenced while drawing, so a failure is one line."""
    loggers = [logging.getLogger(name) for name in QUIET_LOGGERS]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.CRITICAL + 1)
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)


async def _render(figures: Sequence[Figure], browser: str, scale: float) -> list[bytes]:
    import kaleido

    images = []
    async with kaleido.Kaleido(n=1, path=browser, mathjax=False, proxy_server=DEAD_PROXY) as k:
        for f in figures:
            layout = f.figure.layout
            opts = {"format": "png", "scale": scale,
                    "width": layout.width or DEFAULT_WIDTH, "height": layout.height or 500}
            images.append(await calc_fig(k, f.figure, opts))
    return images


async def calc_fig(k, figure, opts: dict, tries: int = STALE_PAGE_TRIES) -> bytes:
    """``k.calc_fig``, tried again where the tab answered from a page without the renderer.

    Kaleido 1.x takes the JavaScript context id of a new tab from the first context the browser
    reports after it navigates; under CPU load that can be the blank page's, and the first figure
    then fails with "kaleido_scopes is not defined". Kaleido reloads a tab after every figure,
    with the right context from then on, so that error (and only it) is tried again, at most
    ``tries`` times in all."""
    for _ in range(tries - 1):
        try:
            return await k.calc_fig(figure, opts=opts)
        except RuntimeError as err:  # kaleido's JavascriptError
            if STALE_PAGE not in str(err):
                raise
    return await k.calc_fig(figure, opts=opts)


async def _bounded(coro, timeout_s: float):
    try:
        return await asyncio.wait_for(coro, timeout_s)
    except asyncio.TimeoutError:
        raise TimeoutError(f"no answer within {timeout_s:g} s") from None


def _run(coro):
    """Run a coroutine to the end, also from inside a running event loop (Jupyter)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coro).result()
