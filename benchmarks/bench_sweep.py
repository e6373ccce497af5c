"""Sweep overhead and the ``--jobs 2`` speed-up, on the synthetic default.

* **overhead** = the wall time of a whole ``run_sweep`` (data generation, scheduling, cell files,
  results.json/csv, report.md and figures) ÷ the sum over its cells of their train + eval times (target ≤ 1.05);
* **speed-up** = wall time with ``jobs=1`` (all threads in one process) ÷ wall time with ``jobs=2`` (the same
  threads split between two worker processes), same grid, same total thread count.

Each repeat runs both configurations into fresh directories (interleaved, so background load hits them
alike); medians are printed. The metrics of the two runs are compared too (they are identical when the
thread count does not change the arithmetic).

Usage:
    python benchmarks/bench_sweep.py [--rows 20000] [--dims 4,8] [--seeds 0,1] [--repeats 1] [--threads 2]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch

from mlet_compress.data import DataSpec
from mlet_compress.sweep import SweepConfig, run_sweep

TIMES = ("train_seconds", "eval_seconds")


def cell_seconds(rows: list[dict]) -> float:
    """Sum over cells of train time + the eval time of each of its stages."""
    train = {(r["variant"], r["seed"]): r["train_seconds"] for r in rows}
    return sum(train.values()) + sum(r["eval_seconds"] for r in rows)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=20000)
    ap.add_argument("--dims", default="4,8")
    ap.add_argument("--mlet-k", default="32")
    ap.add_argument("--seeds", default="0,1")
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--stages", default="q8,svd:rank=2")
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    cfg = SweepConfig(dims=tuple(int(v) for v in args.dims.split(",")), ks=tuple(int(v) for v in args.mlet_k.split(",")),
                      seeds=tuple(int(v) for v in args.seeds.split(",")), tune_baseline=True, epochs=args.epochs,
                      stages=tuple(args.stages.split(",")), data=DataSpec(synthetic={"num_rows": args.rows}))
    print(f"grid: {len(cfg.cells())} cells ({args.dims} x k {args.mlet_k} x seeds {args.seeds} x 3 lr multipliers x "
          f"2 arms), {args.rows} synthetic rows, {args.epochs} epochs, stages {args.stages}; {args.threads} threads")
    overhead, speedup, same = [], [], True
    for rep in range(args.repeats):
        with tempfile.TemporaryDirectory() as tmp:
            walls = {}
            for jobs in (1, 2):
                t0 = time.perf_counter()
                res = run_sweep(cfg, Path(tmp) / f"j{jobs}", jobs=jobs, threads=args.threads)
                walls[jobs] = (time.perf_counter() - t0, res)
            wall1, res1 = walls[1]
            wall2, res2 = walls[2]
            cells = cell_seconds(res1.rows)
            overhead.append(wall1 / cells)
            speedup.append(wall1 / wall2)
            strip = [[{k: v for k, v in r.items() if k not in TIMES} for r in res.rows] for res in (res1, res2)]
            same = same and strip[0] == strip[1]
            print(f"repeat {rep + 1}: jobs=1 wall {wall1:.1f}s, cells' train+eval {cells:.1f}s, overhead "
                  f"{wall1 / cells:.3f}; jobs=2 wall {wall2:.1f}s, speed-up {wall1 / wall2:.2f}x")
    print(f"overhead (median of {args.repeats}): {statistics.median(overhead):.3f} (target <= 1.05)")
    print(f"--jobs 2 speed-up (median of {args.repeats}): {statistics.median(speedup):.2f}x")
    print(f"jobs=1 and jobs=2 metrics identical: {same}")


if __name__ == "__main__":
    main()
