"""``mlet-compress collapse``: turn MLET factors in a checkpoint into plain tables, streaming."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from mlet_compress import CollapseConfig, compress_checkpoint
from mlet_compress.ops.rows import DEFAULT_CHUNK_ROWS

from ._common import byte_progress
from .stages_cmds import print_report


def collapse_cmd(
    checkpoint: Path = typer.Argument(..., help="Input .safetensors checkpoint holding MLET factors."),
    output: Optional[Path] = typer.Option(None, "-o", "--output", help="Output path (default: IN.collapsed.safetensors beside the input)."),
    chunk_rows: int = typer.Option(DEFAULT_CHUNK_ROWS, "--chunk-rows", min=1, help="Rows read and written per chunk (bounds peak memory)."),
    force: bool = typer.Option(False, "--force", help="Overwrite the output if it exists (never the input)."),
    as_json: bool = typer.Option(False, "--json", help="Print the per-table report as JSON."),
) -> None:
    """Collapse every MLET table (n×k table times k→d projection) into one n×d table.

    The output has the state-dict keys of the original, unwrapped model, so it loads into the original
    model class with strict=True. Tables are streamed in row chunks; the output is written to a temp
    file and renamed into place when complete. Prints each table's bytes before → after.

    Example (after `mlet-compress train --keep-factors`, which links runs/latest to the run):

        mlet-compress collapse runs/latest/factors.safetensors -o model.safetensors
    """
    with byte_progress("collapsing") as progress:
        rep = compress_checkpoint(checkpoint, CollapseConfig(chunk_rows=chunk_rows), output, force=force,
                                  progress=progress)
    print_report("collapse (n×k table @ k→d projection → n×d)", rep, ["rows", "inner_dim", "dim"], as_json, checkpoint)
