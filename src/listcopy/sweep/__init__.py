"""Sweeps: grids of configurations x seeds, trained in parallel, resumable, in a SQLite database.

    grid.py         grid files -> points -> distinct runs -> groups of one shape
    store.py        the database (sweep.db, WAL)
    worker.py       one group, trained by the ensemble engine (the package's only use of train)
    local.py        worker processes on this machine
    ray_backend.py  Ray tasks on a cluster
    runner.py       run_sweep: lock, record, group, dispatch, watch, progress
    results.py      the notebook's table and its aggregate over seeds
    cli.py          ``listcopy sweep`` and ``listcopy results``

    >>> from listcopy.sweep import run_sweep, load_rows, format_results
    >>> run_sweep("examples/seed_grid.toml", "sweeps/seed_grid")
    >>> print(format_results(load_rows("sweeps/seed_grid")))

grid.py, store.py and results.py do not import torch.
"""

from ..lazy import lazy_attributes

_LAZY = {
    "Grid": "grid", "GridError": "grid", "Point": "grid", "PlannedRun": "grid",
    "group_runs": "grid", "load_grid": "grid", "parse_grid": "grid",
    "format_results": "results", "load_rows": "results", "runs_table": "results",
    "summary_table": "results", "ResultsTable": "results",
    "SweepBusy": "runner", "SweepError": "runner", "SweepSummary": "runner", "plan": "runner",
    "run_sweep": "runner", "Store": "store",
}

__all__ = list(_LAZY)


__getattr__ = lazy_attributes(__name__, _LAZY)
