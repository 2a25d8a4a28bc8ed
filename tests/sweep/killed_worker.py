"""A sweep worker for tests that stops before training until it is released (or killed).

``wait_for_release`` stands in for ``listcopy.sweep.worker.train_group``: it writes its pid to
``SWEEP_DIR/worker.pid`` (atomically, so the file appears only once the worker is about to wait),
then waits for ``SWEEP_DIR/release`` before training. A test reads the pid and kills the worker
while it is known to be waiting: the moment is reached by construction, never by timing.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

PID_FILE = "worker.pid"
RELEASE_FILE = "release"


def wait_for_release(task):
    from listcopy.sweep.worker import train_group

    sweep_dir = Path(task.run_dirs[0]).parents[1]  # SWEEP_DIR/runs/NAME
    tmp = sweep_dir / f".{PID_FILE}.tmp"
    tmp.write_text(f"{os.getpid()}\n")
    os.replace(tmp, sweep_dir / PID_FILE)
    while not (sweep_dir / RELEASE_FILE).exists():
        time.sleep(0.05)
    return train_group(task)
