"""Grid-searched symmetric quantization speed: search time ÷ one numpy copy of the same bytes.

Target: a 100-candidate grid on a ≥ 1 GB fp32 table (4M × 64) in ≤ 5× the time of ``np.copy``, per table
and per row. Also checks, on a slice, that the fast search picks the brute-force optimum, and estimates
the brute-force time from that slice.

    python benchmarks/bench_quant.py                       # 4M × 64 fp32 (1 GiB), 8 bits
    python benchmarks/bench_quant.py --rows 1000000 --bits 8 4 2
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import numpy as np
import torch

from mlet_compress.ops.quant import dequantize, quantize, search_scale, search_scale_exhaustive


def median_time(fn, repeats: int) -> tuple[float, float]:
    """Median wall-clock and median process CPU time (all threads) of ``fn``."""
    wall, cpu = [], []
    for _ in range(repeats):
        t0, c0 = time.perf_counter(), time.process_time()
        fn()
        wall.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    return statistics.median(wall), statistics.median(cpu)


def sq_err(w: torch.Tensor, s: torch.Tensor, bits: int) -> float:
    return float(((w.double() - dequantize(quantize(w, s, bits), s).double()) ** 2).sum())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=4_000_000)
    ap.add_argument("--dim", type=int, default=64)
    ap.add_argument("--bits", type=int, nargs="+", default=[8])
    ap.add_argument("--grid", type=int, default=100)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--check-rows", type=int, default=4096, help="slice checked against brute force")
    args = ap.parse_args()

    torch.manual_seed(0)
    w = torch.randn(args.rows, args.dim)
    arr = w.numpy()
    gib = w.numel() * 4 / 2**30
    print(f"table {args.rows} x {args.dim} fp32 = {gib:.2f} GiB, grid={args.grid}, "
          f"torch threads={torch.get_num_threads()}, repeats={args.repeats} (median)")
    t_copy, c_copy = median_time(lambda: np.copy(arr), args.repeats)
    print(f"np.copy: {t_copy:.3f} s wall, {c_copy:.3f} s CPU; load average {os.getloadavg()[0]:.2f} "
          f"on {os.cpu_count()} cores")
    sl = w[: args.check_rows]
    for bits in args.bits:
        for gran in ("table", "row"):
            t, c = median_time(lambda: search_scale(w, bits=bits, grid=args.grid, granularity=gran), args.repeats)
            # correctness and brute-force cost on a slice
            threads = torch.get_num_threads()
            torch.set_num_threads(1)  # CPU time of one thread: robust on a shared machine
            t0 = time.thread_time()
            brute = search_scale_exhaustive(sl, bits=bits, grid=args.grid, granularity=gran)
            t_brute_slice = time.thread_time() - t0
            torch.set_num_threads(threads)
            fast = search_scale(sl, bits=bits, grid=args.grid, granularity=gran)
            e_fast, e_brute = sq_err(sl, fast, bits), sq_err(sl, brute, bits)
            rel = (e_fast**0.5 - e_brute**0.5) / max(e_brute**0.5, 1e-300)
            est_brute = t_brute_slice * args.rows / sl.shape[0]
            print(f"bits={bits} {gran:5s}: search {t:7.3f} s = {t / t_copy:5.2f}x np.copy wall (target <= 5x), "
                  f"CPU {c:6.2f} s = {c / c_copy:5.2f}x | brute force ~{est_brute:5.0f} s CPU (from {sl.shape[0]} rows), "
                  f"fast vs brute L2 error on them: {rel:+.1e}")


if __name__ == "__main__":
    main()
