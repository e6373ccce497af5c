"""``mlet-compress convert``: plain state dicts (safetensors, sharded, pickles) ⇄ mlet-compress checkpoints."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

from mlet_compress.converters import ConvertReport, convert_checkpoint

from ._common import err, human_bytes, out


def print_convert(rep: ConvertReport) -> None:
    """What was detected (and why), what was not, per-table bytes before → after, file sizes, notes."""
    t = Table(title=f"{rep.source} ({rep.source_format}) → {rep.target}")
    for col in ("table", "layout", "rows", "dim", "bytes before → after", "why / what was done"):
        t.add_column(col, justify="right" if col in ("rows", "dim", "bytes before → after") else "left", overflow="fold")
    for name, r in sorted(rep.tables.items()):
        what = r["why"] if r["action"] == "described" else r["action"]
        t.add_row(name, r["layout"], str(r["rows"]), str(r["dim"]),
                  f"{human_bytes(r['bytes_before'])} → {human_bytes(r['bytes_after'])}", what)
    t.add_section()
    t.add_row(f"total ({len(rep.tables)} tables)", "", "", "", f"{human_bytes(rep.bytes_before)} → "
              f"{human_bytes(rep.bytes_after)}", f"+ {rep.carried} other tensors ({human_bytes(rep.carried_bytes)}) "
              "carried unchanged")
    out.print(t)
    if rep.target == "mlet" and not rep.tables:
        err.print("no embedding table detected: every tensor is carried unchanged; name the tables with --tables REGEX")
    for key, why in sorted(rep.rejected.items()):
        err.print(f"not a table: {key}: {why}")
    for note in rep.notes:
        err.print(rep.note_text(note, "--bag-mode sum|mean"))
    err.print(f"file: {human_bytes(rep.file_bytes_before)} → {human_bytes(rep.file_bytes_after)}")
    err.print(f"wrote {rep.output}")


def convert_cmd(
    checkpoint: Path = typer.Argument(..., help="A plain .safetensors file, a *.safetensors.index.json shard index, a Hugging Face model folder, a .pt/.pth/.bin state dict, or an mlet-compress checkpoint."),
    output: Optional[Path] = typer.Option(None, "-o", "--output", help="Output path (default: beside the input: .mlet.safetensors, .plain.safetensors or .pt)."),
    to: Optional[str] = typer.Option(None, "--to", help="mlet, safetensors-plain or pt (default: mlet for plain inputs; for mlet-compress inputs from -o's suffix, else pt)."),
    tables: Optional[str] = typer.Option(None, "--tables", help="Regex (full match) of the module names that are embedding tables (default: detected by name: emb*, wte, wpe; not Linear weights)."),
    bag_mode: Optional[str] = typer.Option(None, "--bag-mode", help="sum or mean: record the tables as nn.EmbeddingBag with this mode (default nn.Embedding)."),
    force: bool = typer.Option(False, "--force", help="Overwrite the output if it exists (never the input)."),
    as_json: bool = typer.Option(False, "--json", help="Print the report as JSON."),
) -> None:
    """Convert a checkpoint to the mlet-compress format, or back to a plain state dict.

    To mlet-compress: every tensor is carried unchanged and the embedding tables are described, so
    svd / quantize / benchmark / eval work on it. Tables are 2-D float NAME.weight tensors chosen by
    --tables or detected by name (what was detected, what was not and why is printed). Pickles are
    read with torch.load(weights_only=True): a file that carries code is refused and nothing in it runs.

    Back (--to safetensors-plain or pt): a plain state dict with the original key names that loads with
    load_state_dict(strict=True): MLET factors collapsed, low-rank factors multiplied out, quantized
    tables dequantized (said in the output). Untouched tensors are bit-exact.

    Examples:

        mlet-compress convert model.safetensors                  # -> model.mlet.safetensors

        mlet-compress convert model.mlet.q8.safetensors --to safetensors-plain

        mlet-compress convert dlrm.pt --tables 'emb_l\\.\\d+' --bag-mode sum -o dlrm.safetensors
    """
    rep = convert_checkpoint(checkpoint, output, to=to, tables=tables, bag_mode=bag_mode, force=force)
    if as_json:
        print(json.dumps(rep.to_dict(), indent=2))
        return
    print_convert(rep)
