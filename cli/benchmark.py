"""``mlet-compress benchmark``: bytes (tables and file), compression ratio, error and lookup latency of a checkpoint."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Optional

import typer
from rich.table import Table

from mlet_compress.benchmark import benchmark_checkpoint

from ._common import human_bytes, out


def _f(v: Optional[float], spec: str = ".3g") -> str:
    if v is None:
        return "-"
    return "inf" if isinstance(v, float) and math.isinf(v) else format(v, spec)


def _ms(r: dict[str, Any], kind: str) -> str:
    """``median (min–max)`` of one latency."""
    if f"{kind}_ms" not in r:
        return "-"
    return f"{_f(r[f'{kind}_ms'])} ({_f(r[f'{kind}_ms_min'])}–{_f(r[f'{kind}_ms_max'])})"


def _file_lines(rep: dict[str, Any]) -> list[str]:
    f, tot = rep["file"], rep["totals"]
    if f["bytes_before"] is None:
        return [f"file: {human_bytes(f['bytes_after'])}, of which embedding tables {f['embedding_share_after']:.0%} "
                "(pass --reference for the file size before)"]
    lines = [f"embedding tables: {human_bytes(tot['bytes_before'])} → {human_bytes(tot['bytes_after'])} "
             f"({tot['ratio']:.2f}×); file: {human_bytes(f['bytes_before'])} → {human_bytes(f['bytes_after'])} "
             f"({f['ratio']:.2f}×)",
             f"embedding tables are {f['embedding_share_before']:.0%} of the file before and "
             f"{f['embedding_share_after']:.0%} after; the rest (the header: schema, vocabularies and other metadata, "
             f"{human_bytes(f['header_bytes_after'])}, other tensors: {human_bytes(f['other_tensor_bytes_after'])}) "
             "is not compressed"]
    return lines


def benchmark_cmd(
    checkpoint: Path = typer.Argument(..., help="Checkpoint to measure (compressed or not)."),
    reference: Optional[Path] = typer.Option(None, "--reference", help="The checkpoint it came from (bytes before, reconstruction error); its tables must match."),
    batch: int = typer.Option(4096, "--batch", min=1, help="Bags per timed lookup."),
    bag_size: int = typer.Option(1, "--bag-size", min=1, help="Indices per bag."),
    repeats: int = typer.Option(20, "--repeats", min=1, help="Timings per latency (min / median / max reported)."),
    threads: Optional[int] = typer.Option(None, "--threads", min=1, help="Torch CPU threads while timing (default: torch's choice)."),
    as_json: bool = typer.Option(False, "--json", help="Machine-readable JSON instead of a table."),
) -> None:
    """Report per table and in total: bytes before/after, compression ratio, reconstruction error and SQNR
    against the reference, and lookup latency (median, min–max) of the compressed lookup module against an
    fp32 nn.EmbeddingBag of the reconstruction and PyTorch's fused FBGEMM row-wise int8 kernel (whose
    error, from its asymmetric min/max scheme, is reported too). Also the file's bytes before/after and
    the share of the file that is embedding tables (vocabularies and dense weights are not compressed).
    Each timing repeats the lookup until it lasts 2 ms, so tiny tables are timed accurately.

    Example:

        mlet-compress benchmark model.q8.safetensors --reference model.safetensors --threads 1 --json
    """
    rep = benchmark_checkpoint(checkpoint, reference, batch=batch, bag_size=bag_size, repeats=repeats, threads=threads)
    if as_json:
        print(json.dumps(rep, indent=2))
        return
    t = Table(title=f"{checkpoint} (batch {batch} × bag {bag_size}; ms per lookup: median (min–max) of {repeats}; "
                    f"{rep['threads']} threads)")
    for c in ("table", "layout", "before", "after", "ratio", "SQNR dB", "FBGEMM SQNR", "ours ms", "fp32 ms", "FBGEMM ms"):
        t.add_column(c, justify="left" if c in ("table", "layout") else "right", overflow="fold")
    for r in rep["tables"]:
        t.add_row(r["name"], r["layout"], human_bytes(r["bytes_before"]), human_bytes(r["bytes_after"]), f"{r['ratio']:.2f}",
                  _f(r.get("sqnr_db"), ".1f"), _f(r.get("fbgemm_sqnr_db"), ".1f"), _ms(r, "ours"), _ms(r, "fp32"),
                  _ms(r, "fbgemm"))
    tot = rep["totals"]
    t.add_section()
    t.add_row("total", "", human_bytes(tot["bytes_before"]), human_bytes(tot["bytes_after"]), f"{tot['ratio']:.2f}", "", "",
              _ms(tot, "ours"), _ms(tot, "fp32"), _ms(tot, "fbgemm"))
    out.print(t)
    for line in _file_lines(rep):
        out.print(line)
    line = f"lookup latency ours/fp32 = {tot['ours_over_fp32']:.2f}"
    if "ours_over_fbgemm" in tot:
        line += f", ours/FBGEMM = {tot['ours_over_fbgemm']:.2f}"
    out.print(line)
