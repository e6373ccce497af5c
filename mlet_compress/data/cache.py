"""On-disk cache of preprocessed splits, and content hashing of input files.

A cache entry is one uncompressed ``.npz`` file ``<cache_dir>/<key>.npz`` holding the nine arrays
(``{train,val,test}_{dense,sparse,labels}``) and a JSON ``meta`` entry (preprocessor + info). The key
is the SHA-256 of a canonical JSON of the format, every option and the SHA-256 of every input file,
so a changed file or option never hits a stale entry. Writes are atomic (temp file in the same
folder, fsync, ``os.replace``). A corrupted entry is ignored (and re-written by the caller).

Hashing a large file costs one sequential read; for files of 256 MiB or more the digest is memoised
in ``<cache_dir>/file_hashes.json`` under (absolute path, size, mtime_ns).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path
from typing import Optional

import numpy as np

from ..atomic import atomic_path, atomic_write_bytes
from .types import DataSplits, TabularData

CACHE_VERSION = 1
_MEMO_MIN_BYTES = 256 << 20
_SPLITS = ("train", "val", "test")


def default_cache_dir() -> Path:
    """``$MLET_CACHE_DIR`` or ``~/.cache/mlet-compress``."""
    env = os.environ.get("MLET_CACHE_DIR")
    return Path(env) if env else Path.home() / ".cache" / "mlet-compress"


def file_sha256(path: Path, cache_dir: Path | None = None) -> str:
    """Hex SHA-256 of a file's bytes (memoised for big files when ``cache_dir`` is given).

    Example:
        >>> # file_sha256(Path("train.txt"))
    """
    path = Path(path).resolve()
    st = path.stat()
    memo_key = f"{path}|{st.st_size}|{st.st_mtime_ns}"
    memo_file = cache_dir / "file_hashes.json" if cache_dir is not None else None
    use_memo = memo_file is not None and st.st_size >= _MEMO_MIN_BYTES
    if use_memo and memo_file.is_file():
        try:
            memo = json.loads(memo_file.read_text())
            if memo_key in memo:
                return str(memo[memo_key])
        except (OSError, ValueError):
            pass
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(8 << 20), b""):
            h.update(chunk)
    digest = h.hexdigest()
    if use_memo:
        try:
            memo = json.loads(memo_file.read_text()) if memo_file.is_file() else {}
        except (OSError, ValueError):
            memo = {}
        memo[memo_key] = digest
        try:
            atomic_write_bytes(memo_file, json.dumps(memo, indent=0).encode())
        except OSError:
            pass
    return digest


def cache_key(payload: dict) -> str:
    """SHA-256 of the canonical JSON of ``payload`` plus the cache version."""
    text = json.dumps({"cache_version": CACHE_VERSION, **payload}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def cache_path(cache_dir: Path, key: str) -> Path:
    return Path(cache_dir) / f"{key}.npz"


def save_splits(path: Path, splits: DataSplits) -> None:
    """Write ``splits`` atomically to ``path`` (an ``.npz``)."""
    arrays = {}
    for name in _SPLITS:
        d: TabularData = getattr(splits, name)
        arrays[f"{name}_dense"], arrays[f"{name}_sparse"], arrays[f"{name}_labels"] = d.dense, d.sparse, d.labels
    meta = json.dumps({"preprocessor": splits.preprocessor.to_dict(), "info": splits.info})
    arrays["meta"] = np.frombuffer(meta.encode(), np.uint8)
    with atomic_path(path, make_parents=True) as tmp, open(tmp, "wb") as fh:
        np.savez(fh, **arrays)


def load_splits(path: Path, only: tuple[str, ...] = _SPLITS) -> tuple[dict, dict, dict] | None:
    """Read a cache entry: ``({split: TabularData}, preprocessor_dict, info)``, or None if absent/corrupt."""
    if not Path(path).is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as z:
            meta = json.loads(bytes(z["meta"]).decode())
            data = {s: TabularData(z[f"{s}_dense"], z[f"{s}_sparse"], z[f"{s}_labels"]) for s in only}
        return data, meta["preprocessor"], meta["info"]
    except Exception:  # noqa: BLE001 - a corrupt/partial cache entry is just a miss
        return None


_ENTRY = re.compile(r"(\.?[0-9a-f]{64}\.npz(\..*\.tmp)?|\.?file_hashes\.json(\..*\.tmp)?)")


def cache_entries(cache_dir: Optional[Path] = None) -> list[Path]:
    """The files of the data cache (entries, the file-hash memo, leftover temp files); nothing else in the folder.

    Example:
        >>> cache_entries(Path("/nonexistent"))
        []
    """
    folder = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.is_file() and _ENTRY.fullmatch(p.name))


def clear_cache(cache_dir: Optional[Path] = None) -> tuple[int, int]:
    """Delete the data cache's files (see :func:`cache_entries`; other files and the folder stay).

    Returns:
        ``(files removed, bytes freed)``.
    """
    files = cache_entries(cache_dir)
    size = 0
    for p in files:
        size += p.stat().st_size
        p.unlink(missing_ok=True)
    return len(files), size
