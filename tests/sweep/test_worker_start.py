"""A pool worker whose driver died while the worker was still starting must exit, not wait forever.

Reproduces the orphan seen when a sweep is killed while its workers import torch: by the time
``init_worker`` runs, the worker's parent is already init (or a subreaper), so "the parent I see now"
is not the driver. The driver's pid travels in the initializer's arguments instead.
"""

import os
import subprocess
import sys


def _start_worker(driver: int) -> subprocess.CompletedProcess:
    code = ("from listcopy.sweep.worker import init_worker\n"
            f"init_worker(1, None, driver={driver})\n"
            "print('still alive')\n")
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)


def test_worker_whose_driver_is_gone_exits_at_once():
    gone = _start_worker(driver=2**22 + 12345)  # not this test's pid: the worker's driver is "dead"
    assert gone.returncode == 1
    assert "still alive" not in gone.stdout


def test_worker_of_a_live_driver_starts():
    alive = _start_worker(driver=os.getpid())  # subprocess.run's child: its parent is this process
    assert alive.returncode == 0, alive.stderr
    assert "still alive" in alive.stdout
