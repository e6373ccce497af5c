"""``mlet-compress benchmark``: bytes, compression ratio, error and lookup latency of a checkpoint."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

from mlet_compress.benchmark import benchmark_checkpoint

from ._common import human_bytes, out


def _f(v: Optional[float], spec: str = ".3g") -> str:
    if v is None:
        return "-"
    return "inf" if isinstance(v, float) and math.isinf(v) else format(v, spec)


def benchmark_cmd(
    checkpoint: Path = typer.Argument(..., help="Checkpoint to measure (compressed or not)."),
    reference: Optional[Path] = typer.Option(None, "--reference", help="The checkpoint it came from (bytes before, reconstruction error)."),
    batch: int = typer.Option(4096, "--batch", min=1, help="Bags per timed lookup."),
    bag_size: int = typer.Option(1, "--bag-size", min=1, help="Indices per bag."),
    repeats: int = typer.Option(20, "--repeats", min=1, help="Timed repetitions (median reported)."),
    as_json: bool = typer.Option(False, "--json", help="Machine-readable JSON instead of a table."),
) -> None:
    """Report per table and in total: bytes before/after, compression ratio, reconstruction error and SQNR
    against the reference, and lookup latency of the compressed lookup module against an fp32
    nn.EmbeddingBag of the reconstruction and PyTorch's fused FBGEMM row-wise int8 kernel (whose error,
    from its asymmetric min/max scheme, is reported too).

    Example:

        mlet-compress benchmark model.q8.safetensors --reference model.safetensors --json
    """
    rep = benchmark_checkpoint(checkpoint, reference, batch=batch, bag_size=bag_size, repeats=repeats)
    if as_json:
        print(json.dumps(rep, indent=2))
        return
    t = Table(title=f"{checkpoint} (batch {batch} × bag {bag_size}, median of {repeats})")
    for c in ("table", "layout", "before", "after", "ratio", "SQNR dB", "FBGEMM SQNR", "ours ms", "fp32 ms", "FBGEMM ms"):
        t.add_column(c, justify="left" if c in ("table", "layout") else "right", overflow="fold")
    for r in rep["tables"]:
        t.add_row(r["name"], r["layout"], human_bytes(r["bytes_before"]), human_bytes(r["bytes_after"]), f"{r['ratio']:.2f}",
                  _f(r.get("sqnr_db"), ".1f"), _f(r.get("fbgemm_sqnr_db"), ".1f"), _f(r["ours_ms"]), _f(r["fp32_ms"]),
                  _f(r.get("fbgemm_ms")))
    tot = rep["totals"]
    t.add_section()
    t.add_row("total", "", human_bytes(tot["bytes_before"]), human_bytes(tot["bytes_after"]), f"{tot['ratio']:.2f}", "", "",
              _f(tot["ours_ms"]), _f(tot["fp32_ms"]), _f(tot.get("fbgemm_ms")))
    out.print(t)
    line = f"lookup latency ours/fp32 = {tot['ours_over_fp32']:.2f}"
    if "ours_over_fbgemm" in tot:
        line += f", ours/FBGEMM = {tot['ours_over_fbgemm']:.2f}"
    out.print(line)
