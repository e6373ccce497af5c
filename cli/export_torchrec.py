"""``mlet-compress export-torchrec``: a quantized checkpoint as TorchRec's quantized EmbeddingBagCollection state."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

from ._common import err, human_bytes, out


def export_torchrec_cmd(
    checkpoint: Path = typer.Argument(..., help="Input quantized .safetensors checkpoint (mlet-compress quantize)."),
    output: Optional[Path] = typer.Option(None, "-o", "--output", help="Output path (default: IN.torchrec.safetensors beside the input)."),
    tables: Optional[str] = typer.Option(None, "--tables", help="Regex (full match) of the tables to export (default: every plain quantized table)."),
    max_fp16_error: Optional[float] = typer.Option(None, "--max-fp16-error", help="Refuse tables whose fp16 scales add more relative L2 error than this (e.g. 0.00049 = 2^-11)."),
    force: bool = typer.Option(False, "--force", help="Overwrite the output if it exists (never the input)."),
    as_json: bool = typer.Option(False, "--json", help="Print the exported tables as JSON."),
) -> None:
    """Write the quantized tables as a torchrec.quant.EmbeddingBagCollection state (FBGEMM fused rows).

    Our symmetric b-bit codes map exactly onto FBGEMM's INT8 / INT4 / INT2 rows; the only change is the
    scale, stored in fp16 (the added relative error is printed per table). The output is a safetensors
    file with TorchRec's split-scale-bias state dict (embedding_bags.<table>.weight / .weight_qscale /
    .weight_qbias) and the table configs; rebuild the module with
    mlet_compress.integrations.torchrec.load_torchrec_quant(path). Needs the torchrec extra.

    Example:

        mlet-compress export-torchrec model.q4row.safetensors -o model.torchrec.safetensors
    """
    from mlet_compress.integrations.torchrec_export import export_torchrec_quant  # imports torchrec

    res = export_torchrec_quant(checkpoint, output, tables=tables, max_fp16_error=max_fp16_error, force=force)
    if as_json:
        print(json.dumps({"output": str(res.path), "tables": res.tables, "skipped": res.skipped}, indent=2))
        return
    t = Table(title=f"TorchRec quantized EBC ({len(res.tables)} tables)")
    for col in ("table", "from", "rows", "dim", "type", "pooling", "fp16 scale error"):
        t.add_column(col, justify="left" if col in ("table", "from") else "right", overflow="fold")
    for r in res.tables:
        t.add_row(r["name"], r["source_table"], f"{r['num_embeddings']:,}", str(r["embedding_dim"]), r["data_type"],
                  r["pooling"].lower(), f"{r['fp16_scale_error']:.2e}")
    out.print(t)
    for name, why in sorted(res.skipped.items()):
        err.print(f"left out {name}: {why}")
    err.print(f"wrote {res.path} ({human_bytes(res.path.stat().st_size)})")
