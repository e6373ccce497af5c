"""``mlet-compress collapse``: turn MLET factors in a checkpoint into plain tables, streaming."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from mlet_compress import collapse_checkpoint
from mlet_compress.ops.rows import DEFAULT_CHUNK_ROWS

from ._common import byte_progress, err


def collapse_cmd(
    checkpoint: Path = typer.Argument(..., help="Input .safetensors checkpoint holding MLET factors."),
    output: Optional[Path] = typer.Option(None, "-o", "--output", help="Output path (default: IN.collapsed.safetensors beside the input)."),
    chunk_rows: int = typer.Option(DEFAULT_CHUNK_ROWS, "--chunk-rows", min=1, help="Rows read and written per chunk (bounds peak memory)."),
    force: bool = typer.Option(False, "--force", help="Overwrite the output if it exists (never the input)."),
) -> None:
    """Collapse every MLET table (n×k table times k→d projection) into one n×d table.

    The output has the state-dict keys of the original, unwrapped model, so it loads into the original
    model class with strict=True. Tables are streamed in row chunks; the output is written to a temp
    file and renamed into place when complete.

    Example:

        mlet-compress collapse runs/latest/factors.safetensors -o model.safetensors
    """
    with byte_progress("collapsing") as progress:
        dst = collapse_checkpoint(checkpoint, output, chunk_rows=chunk_rows, force=force, progress=progress)
    err.print(f"wrote {dst}")
