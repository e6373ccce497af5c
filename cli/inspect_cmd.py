"""``mlet-compress inspect``: list the embedding tables of a checkpoint, with sizes and stage chains."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.table import Table

from mlet_compress.inspection import inspect_checkpoint

from ._common import human_bytes, out


def inspect_cmd(
    checkpoint: Path = typer.Argument(..., help="A .safetensors checkpoint written by mlet-compress."),
    as_json: bool = typer.Option(False, "--json", help="Print machine-readable JSON instead of a table."),
) -> None:
    """Show each embedding table: name, kind, rows, dims (n, k, d), dtype, bytes and its stage chain.

    Example:

        mlet-compress inspect model.safetensors --json
    """
    report = inspect_checkpoint(checkpoint)
    if as_json:
        print(json.dumps(report.to_dict(), indent=2))
        return
    t = Table(title=f"{checkpoint}  (schema v{report.schema_version})")
    for col in ("table", "layout", "rows", "n", "k/r", "d", "dtype", "bytes", "stages"):
        t.add_column(col, justify="right" if col in ("rows", "n", "k/r", "d", "bytes") else "left", overflow="fold")
    for row in report.tables:
        t.add_row(
            row.name, row.layout, str(row.rows), str(row.n), "" if row.k is None else str(row.k),
            str(row.d), row.dtype, human_bytes(row.bytes), " → ".join(row.stages) or "-",
        )
    tot = report.totals
    t.add_section()
    t.add_row("total", f"{tot['tables']} tables", "", "", "", "", "", human_bytes(tot["table_bytes"]), "")
    out.print(t)
    out.print(
        f"other tensors: {tot['other_tensors']} ({human_bytes(tot['other_bytes'])}); file: {human_bytes(tot['file_bytes'])}"
    )
    if report.model:
        out.print(f"model: {report.model.get('name', '?')}")
