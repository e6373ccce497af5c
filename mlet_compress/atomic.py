"""Atomic file writes (a temp file in the target folder, fsynced, then renamed into place) and the output-path policy.

Readers never see a half-written file, an interrupted write leaves the destination as it was, and an
output never replaces its input (:func:`resolve_output`).
"""

from __future__ import annotations

import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Optional, Union

from .errors import CheckpointError


def current_umask() -> int:
    """The process umask (read from ``/proc/self/status`` where available, else set-and-restore)."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


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

    On any exception the temp file is removed and ``dest`` is left as it was; an ``OSError`` (disk full,
    permissions) becomes a :class:`CheckpointError` naming the destination. The file gets the mode a
    plain ``open()`` would give it (``0o666`` less the umask), not the temp file's private ``0o600``.

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
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".tmp", dir=folder)
    except OSError as exc:
        raise CheckpointError(f"cannot write to {folder}: {exc.strerror or exc}") from exc
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.chmod(tmp_path, 0o666 & ~current_umask())  # the writer may have replaced the file: set it last
        with open(tmp_path, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp_path, dest)
        _fsync_dir(folder)
    except OSError as exc:  # disk full, permissions, ...: the destination is untouched
        tmp_path.unlink(missing_ok=True)
        raise CheckpointError(f"cannot write {dest}: {exc.strerror or exc}") from exc
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise


def atomic_write_bytes(dest: Union[str, Path], data: bytes, *, make_parents: bool = True) -> None:
    """Write ``data`` to ``dest`` atomically (creating parent folders by default)."""
    with atomic_path(dest, make_parents=make_parents) as tmp:
        tmp.write_bytes(data)


def resolve_output(src: Union[str, Path], dst: Optional[Union[str, Path]], suffix: str, force: bool) -> Path:
    """Default output ``<stem>.<suffix>.safetensors`` beside ``src``; refuse to clobber the input or an existing file."""
    src = Path(src)
    if not src.exists():
        raise CheckpointError(f"{src}: no such file")
    if dst is None:
        stem = src.name[: -len(".safetensors")] if src.name.endswith(".safetensors") else src.stem
        dst = src.with_name(f"{stem}.{suffix}.safetensors")
    dst = Path(dst)
    if dst.exists() and src.exists() and os.path.samefile(dst, src):
        raise CheckpointError(f"output {dst} is the input file; choose another -o path (inputs are never overwritten)")
    if dst.resolve() == src.resolve():
        raise CheckpointError(f"output {dst} is the input file; choose another -o path (inputs are never overwritten)")
    if dst.exists() and not force:
        raise CheckpointError(f"output {dst} already exists; pass {{option}} to overwrite it", option="force")
    if dst.exists() and dst.is_dir():
        raise CheckpointError(f"output {dst} is a directory")
    return dst
