"""``run_sweep``: every cell of a grid, resumable, in one or several worker processes, then the outputs.

An output directory holds ``sweep.json`` (the options that fix the cells' results), ``cells/<id>.json``
(one atomically written file per finished cell), ``work/`` (scratch of the cells in progress),
``results.json`` / ``results.csv`` (every row, grid order), ``report.md`` and the PNG figures. Rerunning
the same sweep reads the finished cells back instead of training them again; a sweep killed mid-cell
restarts that cell; changing an option that alters finished cells is refused (growing the grid — more
dims, seeds, k, multipliers, models — is allowed and trains only the new cells).
"""

from __future__ import annotations

import csv
import io
import json
import multiprocessing
import shutil
import time
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Union

import torch

from ..atomic import atomic_write_bytes
from ..errors import ConfigError
from ..training.outputs import jsonable, read_json, write_json
from ..training.run import load_data
from .cells import Cell
from .config import SweepConfig
from .evaluate import ROW_KEYS, mark_tuned_picks, run_cell

MANIFEST = "sweep.json"
RESULTS_JSON = "results.json"
RESULTS_CSV = "results.csv"
MANIFEST_VERSION = 1


class SweepCallback:
    """Progress hooks of :func:`run_sweep` (override what you need; the library never prints)."""

    def on_start(self, total: int, done: int) -> None:
        """The sweep has ``total`` cells, ``done`` of them already finished (read back)."""

    def on_cell_done(self, cell: Cell, rows: list[dict[str, Any]], seconds: float) -> None:
        """``cell`` finished and its file is written; ``seconds`` is its wall time."""

    def on_message(self, text: str) -> None:
        """A one-line status message."""


@dataclass
class SweepResult:
    """What :func:`run_sweep` returns.

    Attributes:
        rows: every row of ``results.json`` (grid order).
        out: the output directory. trained / reused: cells trained now / read back.
        seconds: wall time of the whole call. files: the files written (results, report, figures).
        notes: messages for the user (e.g. how to get the plots).
    """

    rows: list[dict[str, Any]]
    out: Path
    trained: int
    reused: int
    seconds: float
    files: list[Path] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def _check_manifest(out: Path, cfg: SweepConfig) -> None:
    """Create ``sweep.json`` or check that the existing one allows ``cfg`` to continue the sweep."""
    path = out / MANIFEST
    if path.is_file():
        saved = read_json(path)
        old = saved.get("fingerprint", {}) if isinstance(saved, dict) else {}
        new = jsonable(cfg.fingerprint())
        diff = [k for k in sorted(set(old) | set(new)) if json.dumps(old.get(k), sort_keys=True)
                != json.dumps(new.get(k), sort_keys=True)]
        if diff:
            shown = "; ".join(f"{k}: finished cells used {old.get(k)!r}, now {new.get(k)!r}" for k in diff[:3])
            raise ConfigError(f"sweep directory {str(out)!r} was run with other options ({shown}); rerun with the "
                              "same options or choose another {out}", options={"out": ...})
    elif out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ConfigError(f"{str(out)!r} exists and is not a sweep directory (no {MANIFEST}); choose another {{out}}",
                          options={"out": ...})
    out.mkdir(parents=True, exist_ok=True)
    write_json(path, {"format": "mlet-compress sweep", "version": MANIFEST_VERSION,
                      "fingerprint": cfg.fingerprint(), "config": cfg.to_dict()})


def _cell_path(out: Path, cell: Cell) -> Path:
    return out / "cells" / f"{cell.cell_id}.json"


def _read_cell(out: Path, cell: Cell, fingerprint: dict) -> Optional[list[dict[str, Any]]]:
    """The rows of a finished cell, or None when it has not finished (or belongs to other options)."""
    path = _cell_path(out, cell)
    if not path.is_file():
        return None
    saved = read_json(path)
    if saved.get("cell") != jsonable(cell.to_dict()) or saved.get("fingerprint") != jsonable(fingerprint):
        return None
    return saved["rows"]


def _write_cell(out: Path, cell: Cell, fingerprint: dict, rows: list[dict[str, Any]], seconds: float) -> None:
    write_json(_cell_path(out, cell), {"cell": cell.to_dict(), "fingerprint": fingerprint, "seconds": seconds,
                                       "rows": rows})


# ---------------------------------------------------------------------------------------- workers
_WORKER: dict[str, Any] = {}


def _worker_init(cfg_dict: dict, splits: Any, threads: int) -> None:
    torch.set_num_threads(threads)
    _WORKER["cfg"], _WORKER["splits"] = SweepConfig.from_dict(cfg_dict), splits


def _worker_run(cell: Cell, work: str) -> tuple[list[dict[str, Any]], float]:
    t0 = time.perf_counter()
    rows = run_cell(cell, _WORKER["cfg"], _WORKER["splits"], Path(work))
    shutil.rmtree(work, ignore_errors=True)
    return rows, time.perf_counter() - t0


def _run_serial(todo: list[Cell], cfg: SweepConfig, splits: Any, out: Path, cb: SweepCallback) -> None:
    fp = cfg.fingerprint()
    for cell in todo:
        work = out / "work" / cell.cell_id
        shutil.rmtree(work, ignore_errors=True)
        t0 = time.perf_counter()
        rows = run_cell(cell, cfg, splits, work)
        shutil.rmtree(work, ignore_errors=True)
        seconds = time.perf_counter() - t0
        _write_cell(out, cell, fp, rows, seconds)
        cb.on_cell_done(cell, rows, seconds)


def _run_pool(todo: list[Cell], cfg: SweepConfig, splits: Any, out: Path, cb: SweepCallback, jobs: int,
              threads: int) -> None:
    fp = cfg.fingerprint()
    ctx = multiprocessing.get_context("spawn")  # fork after torch's thread pools start is unsafe
    with ProcessPoolExecutor(jobs, mp_context=ctx, initializer=_worker_init,
                             initargs=(cfg.to_dict(), splits, threads)) as pool:
        pending: dict[Future, Cell] = {}
        queue = list(todo)
        try:
            while queue or pending:
                while queue and len(pending) < jobs:
                    cell = queue.pop(0)
                    work = out / "work" / cell.cell_id
                    shutil.rmtree(work, ignore_errors=True)
                    pending[pool.submit(_worker_run, cell, str(work))] = cell
                done, _ = wait(pending, return_when=FIRST_COMPLETED)
                for fut in done:
                    cell = pending.pop(fut)
                    rows, seconds = fut.result()
                    _write_cell(out, cell, fp, rows, seconds)
                    cb.on_cell_done(cell, rows, seconds)
        except BaseException:
            for fut in pending:
                fut.cancel()
            raise


def csv_text(rows: list[dict[str, Any]]) -> str:
    """``rows`` as CSV (header :data:`ROW_KEYS`; None as an empty field)."""
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(ROW_KEYS), lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: "" if r.get(k) is None else r.get(k) for k in ROW_KEYS})
    return buf.getvalue()


def run_sweep(
    cfg: SweepConfig,
    out: Union[str, Path],
    *,
    jobs: int = 1,
    threads: Optional[int] = None,
    splits: Any = None,
    callback: Optional[SweepCallback] = None,
    report: bool = True,
) -> SweepResult:
    """Run (or resume) a sweep into ``out`` and write ``results.json``, ``results.csv``, ``report.md`` and figures.

    Args:
        cfg: the :class:`SweepConfig`.
        out: the sweep directory (new or empty, or one of an earlier run of the same options).
        jobs: worker processes (1: run the cells in this process).
        threads: torch threads in total, split evenly between the workers (default: torch's current count).
        splits: a ``DataSplits`` to use instead of loading ``cfg.data``.
        callback: progress hooks.
        report: also write ``report.md`` and the figures.

    Returns:
        A :class:`SweepResult`.

    Raises:
        ConfigError: ``out`` holds another sweep (an option that alters finished cells changed) or is not a
            sweep directory; bad options. NumericalError / DataError: from a cell's training or data.

    Example:
        >>> cfg = SweepConfig(dims=(4,), ks=(16,), seeds=(0,), stages=("q8",),
        ...                   data=DataSpec(synthetic={"num_rows": 5000}))   # doctest: +SKIP
        >>> [r["stage"] for r in run_sweep(cfg, "sweeps/demo").rows][:2]    # doctest: +SKIP
        ['none', 'q8']
    """
    t0 = time.perf_counter()
    out, cb = Path(out), callback or SweepCallback()
    if not isinstance(jobs, int) or jobs < 1:
        raise ConfigError(f"jobs must be an integer >= 1, got {jobs!r}")
    _check_manifest(out, cfg)
    cells, fp = cfg.cells(), cfg.fingerprint()
    finished = {c: _read_cell(out, c, fp) for c in cells}
    todo = [c for c in cells if finished[c] is None]
    cb.on_start(len(cells), len(cells) - len(todo))
    if todo:
        shutil.rmtree(out / "work", ignore_errors=True)  # scratch of cells a killed run left unfinished
        splits = splits if splits is not None else load_data(cfg.data, progress=cb.on_message)
        total_threads = threads or torch.get_num_threads()
        if jobs == 1 or len(todo) == 1:
            _run_serial(todo, cfg, splits, out, cb)
        else:
            _run_pool(todo, cfg, splits, out, cb, min(jobs, len(todo)), max(1, total_threads // jobs))
        shutil.rmtree(out / "work", ignore_errors=True)
    rows = [r for c in cells for r in (finished[c] or _read_cell(out, c, fp) or [])]
    mark_tuned_picks(rows, cfg.select)
    write_json(out / RESULTS_JSON, rows)
    atomic_write_bytes(out / RESULTS_CSV, csv_text(rows).encode())
    res = SweepResult(rows, out, len(todo), len(cells) - len(todo), 0.0, [out / RESULTS_JSON, out / RESULTS_CSV])
    if report:
        from .report import write_report  # report pulls in the statistics only when asked

        files, notes = write_report(rows, cfg, out)
        res.files += files
        res.notes += notes
    res.seconds = time.perf_counter() - t0
    return res


__all__ = ["SweepCallback", "SweepResult", "run_sweep", "csv_text", "MANIFEST", "RESULTS_JSON", "RESULTS_CSV"]
