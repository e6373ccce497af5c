"""``mlet-compress inspect``: the embedding tables of a checkpoint, with sizes and stage chains; for a plain
state dict, its tensors and the tables ``convert`` would pick."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

from mlet_compress.inspection import CheckpointSummary, StateDictSummary, inspect_path

from ._common import err, human_bytes, out


def _print_checkpoint(checkpoint: Path, report: CheckpointSummary) -> None:
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


def _print_state_dict(checkpoint: Path, report: StateDictSummary) -> None:
    t = Table(title=f"{checkpoint}  ({report.format}: a plain state dict, not yet an mlet-compress checkpoint)")
    for col in ("tensor", "dtype", "shape", "bytes", "convert would take it as"):
        t.add_column(col, justify="right" if col == "bytes" else "left", overflow="fold")
    owner = {f"{n}.weight": n for n in report.tables} | {f"{n}.table": n for n in report.tables}
    for row in report.tensors:
        name = owner.get(row["key"])
        role = f"table ({report.tables[name]['why']})" if name else ""
        t.add_row(row["key"], row["dtype"], "×".join(map(str, row["shape"])) or "scalar", human_bytes(row["bytes"]), role)
    out.print(t)
    tot = report.totals
    out.print(f"{tot['tensors']} tensors; {tot['tables']} embedding tables ({human_bytes(tot['table_bytes'])}), "
              f"other tensors {human_bytes(tot['other_bytes'])}; file: {human_bytes(tot['file_bytes'])}")
    for key, why in sorted(report.rejected.items()):
        err.print(f"not a table: {key}: {why}")
    err.print(f"convert it with: mlet-compress convert {checkpoint}" + ("" if report.tables else " --tables REGEX"))


def inspect_cmd(
    checkpoint: Path = typer.Argument(..., help="A .safetensors checkpoint (mlet-compress or plain), a shard index, a model folder or a .pt/.bin state dict."),
    tables: Optional[str] = typer.Option(None, "--tables", help="Plain state dicts: regex (full match) of the table module names, to preview convert --tables."),
    as_json: bool = typer.Option(False, "--json", help="Print machine-readable JSON instead of a table."),
) -> None:
    """Show each embedding table: name, kind, rows, dims (n, k, d), dtype, bytes and its stage chain.

    A plain state dict (no mlet-compress schema) lists its tensors and the embedding tables
    `mlet-compress convert` would pick, with the reason, and the 2-D weights it would not.

    Example:

        mlet-compress inspect model.safetensors --json
    """
    report = inspect_path(checkpoint, tables)
    if as_json:
        print(json.dumps(report.to_dict(), indent=2))
    elif isinstance(report, StateDictSummary):
        _print_state_dict(checkpoint, report)
    else:
        _print_checkpoint(checkpoint, report)
