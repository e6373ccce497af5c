"""Truncated SVD: Gram-matrix route (``low_rank_factors``) vs ``torch.linalg.svd(full_matrices=False)``.

Both produce rank-r factors A (n×r), B (r×d) of a table with a decaying spectrum; the script prints the
median time of each (target ratio ≤ 0.3) and both reconstruction errors ‖W − AB‖_F / ‖W‖_F (they must
match: both are the Eckart–Young optimum).

    python benchmarks/bench_svd.py                         # 4M × 64 fp32, rank 16
    python benchmarks/bench_svd.py --rows 1000000 --threads 1
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from mlet_compress.ops.svd import low_rank_factors


def median_time(fn, repeats: int):
    times, out = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
        del out
    return statistics.median(times)


def rel_error(w: torch.Tensor, a: torch.Tensor, b: torch.Tensor, chunk: int = 262144) -> float:
    err = sig = 0.0
    b64 = b.double()
    for s in range(0, w.shape[0], chunk):
        rows = w[s:s + chunk].double()
        err += float(((rows - a[s:s + chunk].double() @ b64) ** 2).sum())
        sig += float((rows**2).sum())
    return (err / sig) ** 0.5


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=4_000_000)
    ap.add_argument("--dim", type=int, default=64)
    ap.add_argument("--rank", type=int, default=16)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: leave the default)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    g = torch.Generator().manual_seed(0)
    q, _ = torch.linalg.qr(torch.randn(args.dim, args.dim, generator=g))
    scales = 0.9 ** torch.arange(args.dim, dtype=torch.float32)
    w = (torch.randn(args.rows, args.dim, generator=g) * scales) @ q.T
    print(f"table {args.rows} x {args.dim} fp32 ({w.numel() * 4 / 2**30:.2f} GiB), rank {args.rank}, "
          f"torch threads={torch.get_num_threads()}, median of {args.repeats}")

    def ours():
        res = low_rank_factors(w, rank=args.rank)
        return res.A, res.B

    def torch_svd():
        u, s, vh = torch.linalg.svd(w, full_matrices=False)
        return u[:, : args.rank] * s[: args.rank], vh[: args.rank].clone()

    t_ours = median_time(ours, args.repeats)
    t_torch = median_time(torch_svd, args.repeats)
    e_ours, e_torch = rel_error(w, *ours()), rel_error(w, *torch_svd())
    print(f"  gram route (ours)     : {t_ours:8.3f} s   rel. error {e_ours:.8f}")
    print(f"  torch.linalg.svd      : {t_torch:8.3f} s   rel. error {e_torch:.8f}")
    print(f"  time ratio ours/torch : {t_ours / t_torch:8.3f}   (target <= 0.3); error ratio {e_ours / e_torch:.8f}")


if __name__ == "__main__":
    main()
