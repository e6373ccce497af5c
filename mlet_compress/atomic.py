"""Atomic file writes: a temp file in the target folder, fsynced, then renamed into place.

Readers never see a half-written file, and an interrupted write leaves the destination as it was.
"""

from __future__ import annotations

import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Union

from .errors import CheckpointError


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(str(path), os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextmanager
def atomic_path(dest: Union[str, Path], *, make_parents: bool = False) -> Iterator[Path]:
    """Yield a temp path in ``dest``'s folder; on success fsync it and rename it onto ``dest``.

    Args:
        dest: the final path.
        make_parents: create missing parent folders (otherwise a missing folder is an error).

    On any exception the temp file is removed and ``dest`` is left as it was.

    Example:
        >>> with atomic_path("/tmp/out.bin") as tmp:   # doctest: +SKIP
        ...     tmp.write_bytes(b"data")
    """
    dest = Path(dest)
    folder = dest.parent if str(dest.parent) else Path(".")
    if make_parents:
        folder.mkdir(parents=True, exist_ok=True)
    elif not folder.exists():
        raise CheckpointError(f"output folder {folder} does not exist")
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".tmp", dir=folder)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        with open(tmp_path, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp_path, dest)
        _fsync_dir(folder)
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise


def atomic_write_bytes(dest: Union[str, Path], data: bytes, *, make_parents: bool = True) -> None:
    """Write ``data`` to ``dest`` atomically (creating parent folders by default)."""
    with atomic_path(dest, make_parents=make_parents) as tmp:
        tmp.write_bytes(data)
