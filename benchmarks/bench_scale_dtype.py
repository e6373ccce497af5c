"""What float16 per-row scales (``QuantConfig(scale_dtype="fp16")``, ``--scale-dtype fp16``) cost in error and save in bytes.

For Gaussian and heavy-tailed (Student-t, 3 degrees of freedom) tables of several widths, quantized per
row at 8, 4 and 2 bits, prints the SQNR with float32 and with float16 scales, the relative growth of the
L2 error, the bound it must stay within (the fp16 error ≤ fp32 error + 2^-11·‖Ŵ32‖, see
tests/test_scale_dtype.py), and the bytes per row (codes + scale) with each and per table.

    python benchmarks/bench_scale_dtype.py [--rows 100000]
"""

from __future__ import annotations

import argparse

import torch

from mlet_compress.ops.quant import packed_cols, quantize_tensor


def tables(rows: int, dim: int, g: torch.Generator) -> dict[str, torch.Tensor]:
    z = torch.randn(rows, dim, generator=g)
    chi2 = (torch.randn(rows, dim, 3, generator=g) ** 2).sum(-1) / 3.0
    return {"gaussian": z * 0.05, "student-t(3)": torch.randn(rows, dim, generator=g) / chi2.sqrt() * 0.05}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=100_000)
    ap.add_argument("--dims", type=int, nargs="+", default=[8, 16, 64])
    ap.add_argument("--bits", type=int, nargs="+", default=[8, 4, 2])
    args = ap.parse_args()
    g = torch.Generator().manual_seed(0)
    print(f"{args.rows} rows per table, per-row scales (std 0.05 entries); SQNR in dB; bytes per row = codes + scale")
    print(f"  {'table':13s} {'d':>3s} {'bits':>4s} {'SQNR fp32':>10s} {'SQNR fp16':>10s} {'L2 fp16/fp32 - 1':>17s} "
          f"{'bound':>9s}  bytes/row fp32 → fp16 (per table)")
    for dim in args.dims:
        for name, w in tables(args.rows, dim, g).items():
            for bits in args.bits:
                q32 = quantize_tensor(w, bits=bits, granularity="row")
                q16 = quantize_tensor(w, bits=bits, granularity="row", scale_dtype="fp16")
                norm = float((q32.dequantize().double() ** 2).sum()) ** 0.5
                growth = q16.l2_error / q32.l2_error - 1
                bound = 2.0**-11 * norm / q32.l2_error
                codes = packed_cols(dim, bits)
                print(f"  {name:13s} {dim:3d} {bits:4d} {q32.sqnr_db:10.3f} {q16.sqnr_db:10.3f} {growth:+17.2e} "
                      f"{bound:9.2e}  {codes + 4} → {codes + 2} ({codes})")


if __name__ == "__main__":
    main()
