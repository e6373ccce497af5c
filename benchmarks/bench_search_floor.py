"""Where the floor of an exact per-row scale search lies: the cost of its building blocks, per table element.

Single-threaded, on a cache-sized block of a Gaussian n×d table, median CPU time per element of:

* ``copy``: the common baseline (``np.copyto`` of a whole ``--rows``×d table into a pre-touched buffer);
* ``eval``: one exact candidate evaluation (divide, round, clamp, subtract, square, row sum — what
  ``_search_rows_pruned`` / ``_refine_rows`` do per candidate);
* ``scatter``: one float64 ``index_add_`` of one value per element into per-row histograms (the
  code-step histograms of ``_search_rows_steps`` need two per code level);
* how many candidates per row each search needs (measured on the table: the candidates a row's clipping
  bound cannot exclude at 4 bits, the refined window at 5–8 bits),

and from them the floor of each per-row search in "× copy", next to the search's own measured time.

    python benchmarks/bench_search_floor.py [--rows 1000000] [--dim 64]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from _common import load_line
from mlet_compress.ops.quant import REFINE, candidate_errors, candidate_scales, qmax, search_scale
from mlet_compress.ops.quant.search import _lowest_candidate


def _cpu_median(fn, repeats: int) -> float:
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.thread_time()
        fn()
        times.append(time.thread_time() - t0)
    return float(np.median(times))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--dim", type=int, default=64)
    ap.add_argument("--grid", type=int, default=100)
    args = ap.parse_args()
    torch.set_num_threads(1)
    g = torch.Generator().manual_seed(0)
    w = torch.randn(args.rows, args.dim, generator=g)
    n_el = w.numel()
    dst = np.empty_like(w.numpy())
    dst.fill(0)
    copy = _cpu_median(lambda: np.copyto(dst, w.numpy()), 5) / n_el
    blk = w[: max(1, (1 << 18) // args.dim)].abs()
    r, d = blk.shape
    s = blk.amax(1) / 7
    y, q = torch.empty_like(blk), torch.empty_like(blk)

    def one_eval():
        torch.div(blk, s.unsqueeze(1), out=y)
        torch.round(y, out=q)
        q.clamp_max_(7)
        return y.sub_(q).square_().sum(1)

    ev = _cpu_median(one_eval, 21) / blk.numel()
    idx = (torch.randint(0, args.grid + 1, (r, d), generator=g) + torch.arange(r).unsqueeze(1) * (args.grid + 1)).reshape(-1)
    hist, vals = torch.zeros(r * (args.grid + 1), dtype=torch.float64), torch.rand(r * d, dtype=torch.float64, generator=g)
    sc = _cpu_median(lambda: hist.index_add_(0, idx, vals), 21) / blk.numel()
    print(f"{args.rows} × {args.dim} Gaussian table, 1 thread, grid {args.grid}; {load_line()}")
    print(f"  per element: copy {copy * 1e9:.2f} ns, one candidate evaluation {ev * 1e9:.2f} ns, "
          f"one float64 scatter-add {sc * 1e9:.2f} ns")
    sl = w[:20000]
    m = sl.abs().amax(1)
    for bits in (2, 4, 8):
        e = candidate_errors(sl, candidate_scales(m, bits, args.grid), bits)
        low = _lowest_candidate(e.min(1).values, m.double(), args.grid)
        n_eval = float((args.grid - low + 1).float().mean())
        floors = {"evaluations": n_eval * ev}
        if bits <= 4:  # scatters alone, without the O(grid) work per row
            floors["histograms"] = qmax(bits) * 2 * sc
        if bits >= 5:
            floors["refined window"] = (n_eval + REFINE - 1) * ev
        t = _cpu_median(lambda: search_scale(w, bits=bits, granularity="row"), 3) / n_el
        parts = ", ".join(f"{k} {v * 1e9:.1f} ns = {v / copy:.1f}x copy" for k, v in floors.items())
        print(f"  {bits}-bit per row: {n_eval:.1f} candidates/row survive the clipping bound; floor by {parts}; "
              f"search measured {t * 1e9:.1f} ns = {t / copy:.1f}x copy")


if __name__ == "__main__":
    main()
