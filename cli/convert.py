"""``mlet-compress convert``: torch pickle checkpoints ⇄ mlet-compress safetensors."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from mlet_compress.convert import PICKLE_SUFFIXES, convert_to_safetensors, convert_to_torch
from mlet_compress.errors import ConfigError

from ._common import err


def convert_cmd(
    checkpoint: Path = typer.Argument(..., help="A .pt/.pth/.bin state dict, or a .safetensors checkpoint to turn into .pt."),
    output: Optional[Path] = typer.Option(None, "-o", "--output", help="Output path (default: beside the input, new suffix)."),
    tables: Optional[str] = typer.Option(None, "--tables", help="Regex (full match) of module names that are plain embedding tables (default: names containing 'emb')."),
    force: bool = typer.Option(False, "--force", help="Overwrite the output if it exists (never the input)."),
) -> None:
    """Convert a PyTorch state dict to a safetensors checkpoint, or back.

    Pickles are loaded with torch.load(weights_only=True): a file that carries code is refused and
    nothing in it runs. A state dict nested under 'state_dict' or 'model' is accepted; shared tensors
    are stored once; MLET factor pairs (NAME.table + NAME.proj) are recognised as MLET tables.

    Example:

        mlet-compress convert model.pt --tables 'emb_l\\.\\d+' -o model.safetensors
    """
    suffix = checkpoint.suffix.lower()
    if suffix in PICKLE_SUFFIXES:
        dst, described = convert_to_safetensors(checkpoint, output, tables=tables, force=force)
        kinds = ", ".join(f"{n} ({e.kind})" for n, e in sorted(described.items())) or "none"
        err.print(f"embedding tables recognised: {kinds}")
    elif suffix == ".safetensors":
        if tables is not None:
            raise ConfigError("--tables only applies when converting a pickle to safetensors")
        dst = convert_to_torch(checkpoint, output, force=force)
    else:
        raise ConfigError(f"{checkpoint}: unknown suffix {checkpoint.suffix!r}; expected .pt, .pth, .bin or .safetensors")
    err.print(f"wrote {dst}")
