"""What every report shares around its page: the progress bar over named stages with the wall
seconds of each, the output-path check, and the last stages (render, atomic write, PNGs).

    with Stages("report", total=6, progress=True) as stages:
        with stages("load"):
            ...
        size, pngs = render_and_write(page, out, png_dir, stages)
    info = ReportInfo.of(page, out, size, pngs, stages.times)   # times has "total" now
"""

from __future__ import annotations

import contextlib
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

from .html import Page


@dataclass
class ReportInfo:
    """What a report call wrote."""

    path: Path
    bytes: int
    sections: list[str]
    figures: list[str]
    pngs: list[Path] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)  # stage -> wall seconds

    @classmethod
    def of(cls, page: Page, path: Path, size: int, pngs: list[Path],
           seconds: dict[str, float]) -> "ReportInfo":
        return cls(path, size, [s.id for s in page.sections], [f.id for f in page.figures], pngs,
                   seconds)


class Stages:
    """A tqdm bar (on stderr, ``progress=False`` hides it) that advances once per stage, and the
    seconds of each stage; ``times["total"]`` is set when the ``with`` block ends."""

    def __init__(self, desc: str, total: int, progress: bool = True):
        self.desc, self.total, self.progress = desc, total, progress
        self.times: dict[str, float] = {}

    def __enter__(self) -> "Stages":
        from tqdm.auto import tqdm

        self.t0 = time.perf_counter()
        self.bar = tqdm(total=self.total, desc=self.desc, unit="step", disable=not self.progress,
                        file=sys.stderr, leave=False)
        return self

    def __exit__(self, *exc) -> None:
        self.bar.close()
        self.times["total"] = time.perf_counter() - self.t0

    @contextlib.contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        """One stage: shown as the bar's postfix while it runs, timed, then counted."""
        self.bar.set_postfix_str(name)
        t = time.perf_counter()
        yield
        self.done(name, time.perf_counter() - t)

    def show(self, name: str) -> None:
        self.bar.set_postfix_str(name)

    def done(self, name: str, seconds: float) -> None:
        """A stage timed elsewhere (an analysis reporting its own seconds)."""
        self.times[name] = seconds
        self.bar.set_postfix_str(name)
        self.bar.update()


def check_out(out: str | Path, png_dir: str | Path | None = None) -> Path:
    """The output file and the PNG folder, checked before any work: ``files.check_output``
    refuses a directory, a socket, a symlink loop...; ``--png`` needs a folder and Chromium."""
    from ..files import check_output

    out = Path(out)
    check_output(out, "--out")
    if png_dir is not None:
        from .png import check_png_output

        check_png_output(png_dir)
    return out


def write_text(path: Path, text: str) -> int:
    """Write ``text`` to ``path`` atomically; its size in bytes."""
    from ..checkpoint import atomic_write

    data = text.encode("utf-8")
    atomic_write(path, lambda tmp: tmp.write_bytes(data))
    return len(data)


def render_and_write(page: Page, out: Path, png_dir: str | Path | None,
                     stages: Stages) -> tuple[int, list[Path]]:
    """The last stages of every report: render the HTML, write it atomically, then the PNGs
    (if ``png_dir``); the page's size in bytes and the PNG files."""
    with stages("html"):
        text = page.render()
    with stages("write"):
        size = write_text(out, text)
    pngs: list[Path] = []
    if png_dir is not None and page.figures:
        from .png import write_pngs

        with stages("png"):
            pngs = write_pngs(page.figures, png_dir)
    return size, pngs
