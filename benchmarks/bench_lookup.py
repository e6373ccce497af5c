"""Int8 pooled-lookup latency: QuantizedEmbeddingBag vs PyTorch's fused FBGEMM kernel vs fp32 EmbeddingBag.

"fused" is QuantizedEmbeddingBag.use_fused_kernel(): our codes/scales in FBGEMM's row layout (an extra copy).
One "step" looks up a batch of ``--batch`` bags (bag size ``--bag``, sum pooling) in each of ``--tables``
tables, as a DLRM forward does. Reported: median step latency (µs) over ``--repeats`` timed runs of
``--iters`` steps each, the ratios ours ÷ FBGEMM (target ≤ 1.2) and ours ÷ fp32, and the reconstruction
error of both 8-bit schemes (ours: symmetric, grid-searched scale; FBGEMM: asymmetric row-wise min/max).

    python benchmarks/bench_lookup.py                    # 26 tables × 200k rows × 64, batch 4096, bag 1
    python benchmarks/bench_lookup.py --rows 1000000 --tables 8
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from torch import nn

from mlet_compress.layers.quantized import QuantizedEmbeddingBag
from mlet_compress.ops.fbgemm_ref import fbgemm_available, fbgemm_embedding_bag, fbgemm_reference


def step_time(fn, iters: int, repeats: int) -> float:
    for _ in range(max(2, iters // 5)):
        fn()
    runs = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(iters):
            fn()
        runs.append((time.perf_counter() - t0) / iters)
    return statistics.median(runs) * 1e6


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tables", type=int, default=26)
    ap.add_argument("--rows", type=int, default=200_000)
    ap.add_argument("--dim", type=int, default=64)
    ap.add_argument("--batch", type=int, default=4096)
    ap.add_argument("--bag", type=int, default=1)
    ap.add_argument("--iters", type=int, default=20)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: leave the default)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if not fbgemm_available():
        raise SystemExit("this torch build has no FBGEMM quantized embedding-bag kernels")

    g = torch.Generator().manual_seed(0)
    fp32 = [nn.EmbeddingBag(args.rows, args.dim, mode="sum") for _ in range(args.tables)]
    with torch.no_grad():
        for t in fp32:
            t.weight.normal_(generator=g)
    ours = {gran: [QuantizedEmbeddingBag.from_float(t, bits=8, grid=100, granularity=gran) for t in fp32]
            for gran in ("table", "row")}
    fused = {gran: [QuantizedEmbeddingBag.from_float(t, bits=8, grid=100, granularity=gran).use_fused_kernel()
                    for t in fp32] for gran in ("table", "row")}
    refs = [fbgemm_reference(t.weight) for t in fp32]
    n_idx = args.batch * args.bag
    idx = [torch.randint(0, args.rows, (n_idx,), generator=g) for _ in range(args.tables)]
    offsets = torch.arange(0, n_idx, args.bag)

    def run_ours(mods):
        return lambda: [m(i, offsets) for m, i in zip(mods, idx)]

    with torch.no_grad():
        t_fb = step_time(lambda: [fbgemm_embedding_bag(r.packed, i, offsets) for r, i in zip(refs, idx)],
                         args.iters, args.repeats)
        t_fp = step_time(run_ours(fp32), args.iters, args.repeats)
        t_ours = {gran: step_time(run_ours(mods), args.iters, args.repeats) for gran, mods in ours.items()}
        t_fused = {gran: step_time(run_ours(mods), args.iters, args.repeats) for gran, mods in fused.items()}
        # correctness: our lookups equal the lookups of our dequantized table
        m0 = ours["row"][0]
        ref0 = nn.functional.embedding_bag(idx[0], m0.dequantized_weight(), offsets, mode="sum")
        exact = torch.equal(m0(idx[0], offsets), ref0)
        exact_fused = torch.equal(fused["row"][0](idx[0], offsets), ref0)

    print(f"{args.tables} tables × {args.rows} rows × {args.dim}, batch {args.batch}, bag size {args.bag}, sum pooling, "
          f"torch threads={torch.get_num_threads()}; median of {args.repeats} × {args.iters} steps")
    print(f"  FBGEMM byte rowwise : {t_fb:9.1f} µs/step")
    print(f"  fp32 nn.EmbeddingBag: {t_fp:9.1f} µs/step")
    for label, times in (("default", t_ours), ("fused  ", t_fused)):
        for gran, t in times.items():
            print(f"  ours int8 {label} ({gran:5s}): {t:9.1f} µs/step = {t / t_fb:5.2f}x FBGEMM (target <= 1.2), "
                  f"{t / t_fp:5.2f}x fp32")
    print(f"  lookups equal dequantized-table lookups exactly: default {exact}, fused {exact_fused}")
    sq = lambda xs: sum(x**2 for x in xs)  # noqa: E731
    for gran, mods in ours.items():
        print(f"  reconstruction, ours ({gran:5s}): L2 {sq(m.l2_error for m in mods) ** 0.5:10.3f}, "
              f"mean SQNR {statistics.mean(m.sqnr_db for m in mods):6.2f} dB, "
              f"{sum(m.qweight.numel() + m.scale.numel() * 4 for m in mods) / 2**20:8.1f} MiB")
    fused_extra = sum(m._fused.numel() for m in fused["row"]) / 2**20
    print(f"  (the fused variant keeps an extra FBGEMM-layout copy: +{fused_extra:.1f} MiB)")
    print(f"  reconstruction, FBGEMM      : L2 {sq(r.l2_error for r in refs) ** 0.5:10.3f}, "
          f"mean SQNR {statistics.mean(r.sqnr_db for r in refs):6.2f} dB, {sum(r.nbytes for r in refs) / 2**20:8.1f} MiB")


if __name__ == "__main__":
    main()
