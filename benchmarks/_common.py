"""Shared pieces of the benchmarks: the one copy baseline, interleaved medians, the machine-load line.

Every "× copy" figure of ``docs/perf.md`` divides by :func:`warm_copy_seconds`: ``np.copyto`` of the same
bytes into a buffer whose pages were touched beforehand, split over the same number of threads as the
measured code, median of repeats (``np.copy`` allocates and page-faults on every call, ≈ 2× slower).
"""

from __future__ import annotations

import os
import statistics
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Callable

import numpy as np


def load_line() -> str:
    """``load average 1.23 / 0.98 / 0.80 (1/5/15 min) on 2 cores``: print it beside every figure."""
    a, b, c = os.getloadavg()
    return f"load average {a:.2f} / {b:.2f} / {c:.2f} (1/5/15 min) on {os.cpu_count()} cores"


def warm_copy_seconds(src: np.ndarray, threads: int = 1, repeats: int = 5) -> float:
    """Median seconds of ``np.copyto(dst, src)`` into a pre-touched ``dst``, split over ``threads`` threads.

    Args:
        src: the bytes the measured code reads (e.g. the table itself, as a numpy view).
        threads: threads of the measured code (numpy releases the GIL while copying).
        repeats: timed repeats after one warm-up copy.
    """
    flat = src.reshape(-1)
    dst = np.empty_like(flat)
    dst.fill(0)  # touch every page once: the copy then measures memory bandwidth, not page faults
    bounds = np.linspace(0, flat.size, max(1, threads) + 1).astype(np.int64)
    parts = [(dst[a:b], flat[a:b]) for a, b in zip(bounds[:-1], bounds[1:])]

    def copy() -> None:
        if len(parts) == 1:
            np.copyto(*parts[0])
        else:
            list(pool.map(lambda p: np.copyto(*p), parts))

    with ThreadPoolExecutor(max(1, threads)) as pool:
        copy()
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            copy()
            times.append(time.perf_counter() - t0)
    return statistics.median(times)


def median_seconds(fn: Callable[[], object], repeats: int, warmup: int = 1) -> float:
    """Median wall-clock seconds of ``fn()`` over ``repeats`` runs after ``warmup`` untimed runs."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def interleaved_medians(fns: dict[str, Callable[[], object]], iters: int, repeats: int,
                        clock: Callable[[], float] = time.perf_counter) -> dict[str, float]:
    """Median seconds per call of each ``fn``, timed in rounds (every variant once per round).

    Interleaving spreads the machine's load changes over all variants alike; each round times ``iters``
    calls of one variant. ``clock=time.process_time`` measures CPU seconds of the whole process instead of
    wall time: robust to other jobs preempting this one on a loaded machine, and equal to the latency only
    single-threaded.
    """
    for fn in fns.values():
        for _ in range(max(1, iters // 5)):
            fn()
    runs: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(repeats):
        for k, fn in fns.items():
            t0 = clock()
            for _ in range(iters):
                fn()
            runs[k].append((clock() - t0) / iters)
    return {k: statistics.median(v) for k, v in runs.items()}
