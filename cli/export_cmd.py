"""``mlet-compress export``: a checkpoint's lookup tables, or a trained model, as ONNX or a torch.export program."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

from mlet_compress.export import DEFAULT_OPSET, ExportResult, export_onnx, export_program

from ._common import err, human_bytes, out

FORMATS = ("onnx", "pt2")


def print_result(res: ExportResult, as_json: bool) -> None:
    """The per-table report (kind, ops, bytes), the signature and the notes of an export."""
    if as_json:
        print(json.dumps(res.to_dict(), indent=2))
        return
    t = Table(title=f"{res.output} ({res.format}, {res.what}, {human_bytes(res.bytes)})")
    for col in ("table", "layout", "graph", "bytes"):
        t.add_column(col, overflow="fold", justify="right" if col == "bytes" else "left")
    for name, row in res.tables.items():
        size = human_bytes(row["bytes_export"])
        if row["bytes_export"] != row["bytes_source"]:
            size = f"{human_bytes(row['bytes_source'])} → {size}"
        t.add_row(name, row["layout"], row["graph"], size)
    out.print(t)
    out.print("inputs:  " + ", ".join(f"{k}: {v}" for k, v in res.inputs.items()), markup=False, highlight=False)
    out.print("outputs: " + ", ".join(f"{k}: {v}" for k, v in res.outputs.items()), markup=False, highlight=False)
    for note in res.notes:
        err.print(f"note: {note}", markup=False, highlight=False)
    err.print(f"wrote {res.output}")


def export_cmd(
    checkpoint: Path = typer.Argument(..., help="A .safetensors checkpoint (its tables), or a train run directory (the whole model)."),
    to: str = typer.Option(..., "--to", help="onnx or pt2 (a torch.export program, torch.export.load)."),
    output: Optional[Path] = typer.Option(None, "-o", "--output", help="Output file (default: beside the input, .onnx / .pt2; RUN/model.onnx)."),
    model_config: Optional[Path] = typer.Option(None, "--model-config", help="Export the whole model from CHECKPOINT: a train run's config.json or its directory."),
    tables: Optional[str] = typer.Option(None, "--tables", help="Regex (full match) of the tables to export (tables only; default all)."),
    per_sample_weights: bool = typer.Option(False, "--per-sample-weights", help="Give sum bags a TABLE.per_sample_weights input."),
    low_bit: str = typer.Option("packed", "--low-bit", help="ONNX, 2/3/4-bit codes: packed (as stored) or int8 (unpacked at export, 2-4x the bytes)."),
    opset: int = typer.Option(DEFAULT_OPSET, "--opset", help="ONNX opset (>= 18)."),
    force: bool = typer.Option(False, "--force", help="Overwrite the output if it exists (never the input)."),
    as_json: bool = typer.Option(False, "--json", help="Print the report as JSON."),
) -> None:
    """Export lookup tables (any kind: plain, collapsed, MLET, low-rank, 2-8-bit quantized, hashed) or a
    whole trained model to ONNX or a torch.export program.

    Quantized tables stay quantized: Gather of the integer codes, DequantizeLinear with the per-table or
    per-row scale, the bag reduction over offsets, MatMul for low-rank factors, Mod for hashing.
    Table inputs: TABLE.indices int64[N] and, for bags, TABLE.offsets int64[B] (docs/export.md).
    A run directory (or --model-config) exports the model: inputs dense float32[batch, num_dense] and
    sparse int64[batch, F], output logits.

    Examples:

        mlet-compress export model.q4row.safetensors --to onnx

        mlet-compress export runs/latest --to onnx

        mlet-compress export runs/latest/model.q8row.safetensors --model-config runs/latest --to pt2
    """
    if to not in FORMATS:
        raise typer.BadParameter(f"{to!r} is not one of {', '.join(FORMATS)}", param_hint="--to")
    common = dict(model_config=model_config, tables=tables, per_sample_weights=per_sample_weights, force=force)
    if to == "onnx":
        res = export_onnx(checkpoint, output, low_bit=low_bit, opset=opset, **common)
    else:
        res = export_program(checkpoint, output, **common)
    print_result(res, as_json)
