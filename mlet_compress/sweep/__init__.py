"""``mlet-compress sweep``: quality vs size, measured end to end (the paper's Tables 3–5 and Figs 5, 7, 8).

A sweep trains every cell of a grid — model × arm (single-layer / MLET per k) × d × embedding-lr
multiplier × hash ratio × seed — compresses each cell's inference checkpoint with every stage chain
(``q8``, ``q4``, ``q8row``, ``svd:energy=0.95``, ``svd:rank=2+q8``, ...), evaluates every file on the same
test split, and writes ``results.json`` / ``results.csv``, ``report.md`` and the figures. It is resumable:
finished cells are files, read back on a rerun.

Modules: ``config`` (SweepConfig, stage strings), ``cells`` (Cell, the grid), ``evaluate`` (one cell),
``runner`` (run_sweep: resume, worker processes), ``stats`` (seed statistics, the memory-reduction rule),
``report`` (report.md), ``plots`` (matplotlib figures, the ``[plots]`` extra).

Example:
    >>> from mlet_compress.sweep import SweepConfig
    >>> from mlet_compress.data import DataSpec
    >>> cfg = SweepConfig(dims=(4, 8), ks=(32,), seeds=(0, 1), stages=("q8", "svd:rank=2"),
    ...                   data=DataSpec(synthetic={"num_rows": 20000}))
    >>> len(cfg.cells())
    8
    >>> run_sweep(cfg, "sweeps/demo").rows[0]["stage"]          # doctest: +SKIP
    'none'
"""

from .cells import Cell, grid_cells
from .config import NO_STAGE, SweepConfig, parse_stage
from .evaluate import ROW_KEYS, mark_tuned_picks, run_cell
from .runner import SweepCallback, SweepResult, run_sweep
from .stats import Point, Reduction, memory_reduction, paired

__all__ = ["SweepConfig", "Cell", "grid_cells", "parse_stage", "NO_STAGE", "ROW_KEYS", "run_cell", "mark_tuned_picks",
           "SweepCallback", "SweepResult", "run_sweep", "Point", "Reduction", "memory_reduction", "paired"]
