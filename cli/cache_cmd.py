"""``mlet-compress cache``: where the preprocessed-data cache is, how big it is, and clearing it."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from mlet_compress.data.cache import cache_entries, clear_cache, default_cache_dir

from ._common import err, human_bytes, out


def cache_cmd(
    clear: bool = typer.Option(False, "--clear", help="Delete the cached splits (they are rebuilt from the data files when needed)."),
    cache_dir: Optional[Path] = typer.Option(None, "--dir", help="Cache folder (default: $MLET_CACHE_DIR or ~/.cache/mlet-compress)."),
) -> None:
    """Show the data cache (preprocessed train/val/test splits of real data files) or clear it.

    `train` and `eval` cache each data file's preprocessed splits under $MLET_CACHE_DIR (default
    ~/.cache/mlet-compress), keyed by the file contents and every option, so a changed file or option
    never reads a stale entry. Clearing only costs the next run its preprocessing time.

    Example:

        mlet-compress cache --clear
    """
    folder = cache_dir or default_cache_dir()
    files = cache_entries(folder)
    size = sum(p.stat().st_size for p in files)
    out.print(f"data cache: {folder} ({len(files)} files, {human_bytes(size)})")
    if clear:
        n, freed = clear_cache(folder)
        err.print(f"removed {n} files ({human_bytes(freed)})")
