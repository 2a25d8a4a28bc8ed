"""``gc_paused()``: Python's cyclic garbage collector held off while many objects are made at once.

Setting up an ensemble makes a few hundred thousand tensors and dicts (each member's initial state,
later each member's weights taken back) and keeps them all: nothing there is cyclic garbage, yet
every automatic collection of the oldest generation walks every one of them again. At E = 8192 on
one CPU thread those collections were about a third of the set-up (2.6 -> 1.8-2.0 s,
``benchmarks/ensemble_setup.py``). Reference counting still frees everything as usual; cycles made
meanwhile wait for the next collection after the block. The collector's previous state (enabled
or not) is restored, also when the block raises.
"""

from __future__ import annotations

import contextlib
import gc
from typing import Iterator


@contextlib.contextmanager
def gc_paused() -> Iterator[None]:
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()
