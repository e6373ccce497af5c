"""``mlet-compress svd`` and ``mlet-compress quantize``: streaming compression of checkpoint tables.

Each command builds the stage's config and calls :func:`mlet_compress.compress_checkpoint`.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

from mlet_compress import CompressReport, LowRankConfig, QuantConfig, compress_checkpoint
from mlet_compress.ops.rows import DEFAULT_CHUNK_ROWS

from ._common import byte_progress, err, human_bytes, out

_OUT = typer.Option(None, "-o", "--output", help="Output path (default: beside the input, with a .svd / .q<bits>[row] suffix).")
_TABLES = typer.Option(None, "--tables", help="Regex (full match) of table names to process (default: every compatible table with d >= 2).")
_CHUNK = typer.Option(DEFAULT_CHUNK_ROWS, "--chunk-rows", min=1, help="Rows per chunk (bounds peak memory).")
_FORCE = typer.Option(False, "--force", help="Overwrite the output if it exists (never the input).")
_JSON = typer.Option(False, "--json", help="Print the per-table report as JSON.")


def _fmt(v) -> str:
    if isinstance(v, float):
        return "inf" if math.isinf(v) else f"{v:.4g}"
    return str(v)


def print_report(title: str, rep: CompressReport, cols: list[str], as_json: bool, src: Optional[Path] = None) -> None:
    """The per-table report of a compressing command: its columns, bytes before → after per table and in
    total, the tables skipped and why, and the file's bytes before → after."""
    files = (src.stat().st_size, rep.output.stat().st_size) if src is not None and rep.output is not None else None
    if as_json:
        doc = rep.to_dict()
        if files:
            doc["totals"].update(file_bytes_before=files[0], file_bytes_after=files[1])
        print(json.dumps(doc, indent=2))
        return
    for note in rep.notes:
        err.print(note)
    t = Table(title=title)
    t.add_column("table", overflow="fold")
    for c in cols:
        t.add_column(c, justify="right")
    t.add_column("bytes before → after", justify="right")
    for name, r in sorted(rep.items()):
        t.add_row(name, *(_fmt(r.get(c, "")) for c in cols),
                  f"{human_bytes(r['bytes_before'])} → {human_bytes(r['bytes_after'])}")
    t.add_section()
    t.add_row(f"total ({len(rep)} tables)", *("" for _ in cols),
              f"{human_bytes(rep.bytes_before)} → {human_bytes(rep.bytes_after)}")
    out.print(t)
    print_skipped(rep.skipped)
    if files:
        change = (f"{files[0] / max(1, files[1]):.2f}×" if files[1] <= files[0]
                  else f"grew by {human_bytes(files[1] - files[0])}: the stage records in the header outweigh what the tables saved")
        err.print(f"file: {human_bytes(files[0])} → {human_bytes(files[1])} ({change}; the other tensors are copied as they are)")
    err.print(f"wrote {rep.output}")


def print_skipped(skipped: dict[str, str]) -> None:
    """One line per skipped table; tables skipped for the same reason share a line."""
    by_reason: dict[str, list[str]] = {}
    for name, why in sorted(skipped.items()):
        by_reason.setdefault(why, []).append(name)
    for why, names in by_reason.items():
        if len(names) == 1:
            err.print(f"skipped {names[0]}: {why}")
        else:
            shown = ", ".join(names[:6]) + (f" and {len(names) - 6} more" if len(names) > 6 else "")
            err.print(f"skipped {len(names)} tables ({shown}): {why}")


def svd_cmd(
    checkpoint: Path = typer.Argument(..., help="Input .safetensors checkpoint."),
    rank: Optional[int] = typer.Option(None, "--rank", min=1, help="Keep R singular directions (1..d)."),
    energy: Optional[float] = typer.Option(None, "--energy", help="Keep the smallest rank retaining this fraction of Σσ² (0 < E <= 1)."),
    output: Optional[Path] = _OUT,
    tables: Optional[str] = _TABLES,
    chunk_rows: int = _CHUNK,
    force: bool = _FORCE,
    as_json: bool = _JSON,
) -> None:
    """Replace tables by truncated-SVD factors A (n×r) and B (r×d), the Frobenius-optimal rank-r fit.

    Computed from the d×d Gram matrix accumulated over row chunks in float64, so tables larger than
    memory work. Uncollapsed MLET tables are collapsed on the fly first (said in the output). A table
    whose rank saves nothing (r·(n+d) >= n·d) is left as it is and reported as skipped. Order: svd
    before quantize (quantized tables are refused).

    Example:

        mlet-compress svd model.safetensors --rank 4 --tables 'embedding\\.tables\\..*'

        mlet-compress svd model.safetensors --energy 0.99     # tables whose rank would save nothing are skipped
    """
    config = LowRankConfig(rank=rank, energy=energy, chunk_rows=chunk_rows)
    with byte_progress("svd") as progress:
        rep = compress_checkpoint(checkpoint, config, output, tables=tables, force=force, progress=progress)
    print_report("truncated SVD", rep, ["rows", "dim", "rank", "rel_error"], as_json, checkpoint)


def quantize_cmd(
    checkpoint: Path = typer.Argument(..., help="Input .safetensors checkpoint."),
    bits: int = typer.Option(8, "--bits", help="Bits per value, 2..8 (4 and 2 bits pack 2 and 4 values per byte)."),
    granularity: str = typer.Option("table", "--granularity", help="'table' (one scale per table, the paper's) or 'row'."),
    grid: int = typer.Option(100, "--grid", help="Candidate clipping thresholds searched for the L2-optimal scale."),
    scale_dtype: str = typer.Option("fp32", "--scale-dtype", help="Storage of the scales: 'fp32' or 'fp16' (2 instead of 4 bytes per row with --granularity row; FBGEMM's choice; costs at most 2^-11 of the table's norm in L2 error)."),
    output: Optional[Path] = _OUT,
    tables: Optional[str] = _TABLES,
    chunk_rows: int = _CHUNK,
    force: bool = _FORCE,
    as_json: bool = _JSON,
) -> None:
    """Quantize tables with the paper's uniform symmetric quantizer and an L2 grid-searched scale.

    Plain tables are quantized whole; for low-rank tables the n×r factor A is quantized and B kept in
    float. Prints the L2 error and SQNR of each table.

    Example:

        mlet-compress quantize model.svd.safetensors --bits 8 --granularity row --scale-dtype fp16
    """
    config = QuantConfig(bits=bits, granularity=granularity, grid=grid, chunk_rows=chunk_rows, scale_dtype=scale_dtype)
    with byte_progress("quantize") as progress:
        rep = compress_checkpoint(checkpoint, config, output, tables=tables, force=force, progress=progress)
    title = f"{bits}-bit quantization ({granularity}" + (", fp16 scales)" if scale_dtype == "fp16" else ")")
    print_report(title, rep, ["rows", "dim", "bits", "l2_error", "sqnr_db"], as_json, checkpoint)
