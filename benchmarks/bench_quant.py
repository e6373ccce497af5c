"""Grid-searched symmetric quantization speed: scale search time ÷ a warm copy of the same bytes.

The copy is the common baseline of ``benchmarks/_common.py`` (``np.copyto`` into a pre-touched buffer,
split over the same threads as the search, median). For each bit width and granularity the script prints
the median search time and its ratio to the copy (targets: per row at 2 and 4 bits ≤ 10×), and for
per-row searches at 5–8 bits also the search without the refinement around the best candidate (the
pre-0.3 search, by switching ``refined`` off in this process) with the ratio refined ÷ grid-only (target
≤ 1.5). On a slice it checks the fast search against the exhaustive reference and estimates the
exhaustive search's CPU time.

    python benchmarks/bench_quant.py                                   # 4M × 64 fp32 (1 GiB), bits 8 4 2
    python benchmarks/bench_quant.py --rows 1000000 --bits 8 --threads 1
"""

from __future__ import annotations

import argparse
import time

import torch

from _common import load_line, median_seconds, warm_copy_seconds
from mlet_compress.ops.quant import dequantize, quantize, refined, search_scale, search_scale_exhaustive
from mlet_compress.ops.quant import search as search_mod


def sq_err(w: torch.Tensor, s: torch.Tensor, bits: int) -> float:
    return float(((w.double() - dequantize(quantize(w, s, bits), s).double()) ** 2).sum())


def grid_only(w: torch.Tensor, bits: int, grid: int) -> torch.Tensor:
    """The per-row search without the refinement (what 0.2 did), for the refined ÷ grid-only ratio."""
    saved = search_mod.refined
    search_mod.refined = lambda bits, granularity: False
    try:
        return search_scale(w, bits=bits, grid=grid, granularity="row")
    finally:
        search_mod.refined = saved


def check_slice(w: torch.Tensor, bits: int, grid: int, gran: str, rows: int) -> str:
    """Fast vs exhaustive search on the first ``rows`` rows, and the exhaustive search's estimated CPU time."""
    sl = w[:rows]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    t0 = time.thread_time()
    brute = search_scale_exhaustive(sl, bits=bits, grid=grid, granularity=gran)
    t_brute = time.thread_time() - t0
    torch.set_num_threads(threads)
    fast = search_scale(sl, bits=bits, grid=grid, granularity=gran)
    e_fast, e_brute = sq_err(sl, fast, bits), sq_err(sl, brute, bits)
    rel = (e_fast**0.5 - e_brute**0.5) / max(e_brute**0.5, 1e-300)
    return (f"exhaustive ~{t_brute * w.shape[0] / rows:6.0f} s CPU (from {rows} rows); "
            f"fast − exhaustive L2 error on them: {rel:+.1e}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=4_000_000)
    ap.add_argument("--dim", type=int, default=64)
    ap.add_argument("--bits", type=int, nargs="+", default=[8, 4, 2])
    ap.add_argument("--grid", type=int, default=100)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: leave the default)")
    ap.add_argument("--check-rows", type=int, default=1024, help="slice checked against the exhaustive search")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    threads = torch.get_num_threads()
    w = torch.randn(args.rows, args.dim, generator=torch.Generator().manual_seed(0))
    t_copy = warm_copy_seconds(w.numpy(), threads, max(5, args.repeats))
    print(f"table {args.rows} x {args.dim} fp32 = {w.numel() * 4 / 2**30:.2f} GiB, grid={args.grid}, "
          f"threads={threads}, median of {args.repeats}; {load_line()}")
    print(f"warm copy (np.copyto, pre-touched, {threads} thread(s)): {t_copy:.3f} s = "
          f"{w.numel() * 4 / t_copy / 1e9:.1f} GB/s")
    for bits in args.bits:
        for gran in ("table", "row"):
            t = median_seconds(lambda: search_scale(w, bits=bits, grid=args.grid, granularity=gran), args.repeats)
            line = f"bits={bits} {gran:5s}: search {t:7.3f} s = {t / t_copy:6.2f}x copy"
            if refined(bits, gran):
                t0 = median_seconds(lambda: grid_only(w, bits, args.grid), args.repeats)
                line += f" (grid only {t0:.3f} s = {t0 / t_copy:5.2f}x copy; refined/grid-only {t / t0:4.2f}, target <= 1.5)"
            elif gran == "row" and bits in (2, 4):
                line += " (target <= 10x)"
            print(line + " | " + check_slice(w, bits, args.grid, gran, args.check_rows), flush=True)


if __name__ == "__main__":
    main()
