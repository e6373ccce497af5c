"""``mlet-compress svd`` and ``mlet-compress quantize``: streaming compression of checkpoint tables."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

from mlet_compress.ckpt_stages import DEFAULT_CHUNK_ROWS, quantize_checkpoint, svd_checkpoint

from ._common import byte_progress, err, out

_OUT = typer.Option(None, "-o", "--output", help="Output path (default: beside the input, with a .svd / .q<bits> suffix).")
_TABLES = typer.Option(None, "--tables", help="Regex (full match) of table names to process (default: every compatible table with d >= 2).")
_CHUNK = typer.Option(DEFAULT_CHUNK_ROWS, "--chunk-rows", min=1, help="Rows per chunk (bounds peak memory).")
_FORCE = typer.Option(False, "--force", help="Overwrite the output if it exists (never the input).")
_JSON = typer.Option(False, "--json", help="Print the per-table report as JSON.")


def _fmt(v) -> str:
    if isinstance(v, float):
        return "inf" if math.isinf(v) else f"{v:.4g}"
    return str(v)


def _report(title: str, rows: dict[str, dict], cols: list[str], as_json: bool, dst: Path) -> None:
    if as_json:
        print(json.dumps({"output": str(dst), "tables": rows}, indent=2))
        return
    t = Table(title=title)
    t.add_column("table", overflow="fold")
    for c in cols:
        t.add_column(c, justify="right")
    for name, r in sorted(rows.items()):
        t.add_row(name, *(_fmt(r.get(c, "")) for c in cols))
    out.print(t)
    err.print(f"wrote {dst}")


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
    memory work. Uncollapsed MLET tables are collapsed on the fly first (said in the output).

    Example:

        mlet-compress svd model.safetensors --energy 0.99 --tables 'emb\\.tables\\..*'
    """
    with byte_progress("svd") as progress:
        dst, rep = svd_checkpoint(checkpoint, output, rank=rank, energy=energy, tables=tables, chunk_rows=chunk_rows,
                                  force=force, progress=progress, notify=err.print)
    _report("truncated SVD", rep, ["rows", "dim", "rank", "rel_error"], as_json, dst)


def quantize_cmd(
    checkpoint: Path = typer.Argument(..., help="Input .safetensors checkpoint."),
    bits: int = typer.Option(8, "--bits", help="Bits per value, 2..8 (4 and 2 bits pack 2 and 4 values per byte)."),
    granularity: str = typer.Option("table", "--granularity", help="'table' (one scale per table, the paper's) or 'row'."),
    grid: int = typer.Option(100, "--grid", help="Candidate clipping thresholds searched for the L2-optimal scale."),
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

        mlet-compress quantize model.svd.safetensors --bits 8 --granularity row
    """
    with byte_progress("quantize") as progress:
        dst, rep = quantize_checkpoint(checkpoint, output, bits=bits, granularity=granularity, grid=grid, tables=tables,
                                       chunk_rows=chunk_rows, force=force, progress=progress, notify=err.print)
    _report(f"{bits}-bit quantization ({granularity})", rep, ["rows", "dim", "bits", "l2_error", "sqnr_db"], as_json, dst)
