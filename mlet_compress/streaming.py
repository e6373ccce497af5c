"""Streaming checkpoint transformations: read tables in row chunks, write the output incrementally.

A transformation is a :class:`Plan`: for some tables, the tensors to drop and the output tensors to
produce (each a known dtype/shape plus a generator of row chunks), with the new schema entry. Every other
tensor is copied unchanged, also in chunks. Peak memory is a few chunks, whatever the table size: input
rows are read with positioned reads (``os.pread``) at the offsets of the safetensors header, so no
file-backed mapping of the whole table is ever touched.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Optional, Union

import numpy as np
import torch

from .checkpoint import build_metadata, load_header
from .errors import CheckpointError
from .safetensors_io import StreamingWriter, TensorInfo, atomic_path, read_header

Progress = Callable[[int, int], None]  # (bytes just written, total bytes)
ChunkFn = Callable[[], Iterator[torch.Tensor]]


class RowReader:
    """Positioned reads of row ranges of the tensors in a safetensors file.

    Example:
        >>> with RowReader("ckpt.safetensors") as r:   # doctest: +SKIP
        ...     rows = r.rows("emb.table", 0, 1024)
    """

    def __init__(self, path: Union[str, Path]):
        self.path = Path(path)
        _, self.infos, self.data_start = read_header(self.path)
        self._fd = os.open(str(self.path), os.O_RDONLY)

    def __enter__(self) -> "RowReader":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        """Close the file descriptor."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def info(self, key: str) -> TensorInfo:
        """Header entry of ``key``."""
        try:
            return self.infos[key]
        except KeyError:
            raise CheckpointError(f"{self.path}: tensor {key!r} is missing") from None

    def _read(self, offset: int, nbytes: int) -> bytearray:
        buf = bytearray(nbytes)
        view = memoryview(buf)
        got = 0
        while got < nbytes:
            n = os.preadv(self._fd, [view[got:]], self.data_start + offset + got)
            if n <= 0:
                raise CheckpointError(f"{self.path}: truncated while reading tensor data")
            got += n
        return buf

    def rows(self, key: str, start: int, stop: int) -> torch.Tensor:
        """Rows ``[start, stop)`` of tensor ``key`` (the whole tensor for 0-d tensors)."""
        info = self.info(key)
        if len(info.shape) == 0:
            start, stop, row_elems = 0, 1, 1
        else:
            row_elems = int(np.prod(info.shape[1:], dtype=np.int64))
        esize = torch.empty((), dtype=info.dtype).element_size()
        row_bytes = row_elems * esize
        nbytes = (stop - start) * row_bytes
        shape = (stop - start, *info.shape[1:]) if info.shape else ()
        if nbytes == 0:
            return torch.empty(shape, dtype=info.dtype)
        buf = self._read(info.begin + start * row_bytes, nbytes)
        return torch.frombuffer(buf, dtype=info.dtype).reshape(shape)

    def full(self, key: str) -> torch.Tensor:
        """The whole tensor ``key`` (use for small tensors such as projections)."""
        info = self.info(key)
        return self.rows(key, 0, info.shape[0] if info.shape else 1)

    def chunks(self, key: str, chunk_rows: int) -> Iterator[torch.Tensor]:
        """Successive row chunks of ``key`` (bytes-bounded: ``chunk_rows`` rows at most)."""
        info = self.info(key)
        if not info.shape:
            yield self.rows(key, 0, 1)
            return
        n = info.shape[0]
        for a in range(0, n, chunk_rows):
            yield self.rows(key, a, min(n, a + chunk_rows))
        if n == 0:
            yield self.rows(key, 0, 0)


@dataclass
class OutTensor:
    """One tensor of the output: key, dtype, shape and a function returning its row chunks."""

    key: str
    dtype: torch.dtype
    shape: tuple[int, ...]
    chunks: ChunkFn


@dataclass
class TablePlan:
    """How one table is rewritten: input keys replaced by output tensors, and its new schema entry."""

    drop_keys: list[str]
    outputs: list[OutTensor]
    entry: dict


@dataclass
class Plan:
    """A whole-checkpoint transformation."""

    tables: dict[str, TablePlan] = field(default_factory=dict)
    rename_tables: dict[str, str] = field(default_factory=dict)


def resolve_output(src: Union[str, Path], dst: Optional[Union[str, Path]], suffix: str, force: bool) -> Path:
    """Default output ``<stem>.<suffix>.safetensors`` beside ``src``; refuse to clobber the input or an existing file."""
    src = Path(src)
    if dst is None:
        stem = src.name[: -len(".safetensors")] if src.name.endswith(".safetensors") else src.stem
        dst = src.with_name(f"{stem}.{suffix}.safetensors")
    dst = Path(dst)
    if dst.exists() and src.exists() and os.path.samefile(dst, src):
        raise CheckpointError(f"output {dst} is the input file; choose another -o path (inputs are never overwritten)")
    if dst.resolve() == src.resolve():
        raise CheckpointError(f"output {dst} is the input file; choose another -o path (inputs are never overwritten)")
    if dst.exists() and not force:
        raise CheckpointError(f"output {dst} already exists; pass --force to overwrite it")
    if dst.exists() and dst.is_dir():
        raise CheckpointError(f"output {dst} is a directory")
    return dst


def copy_chunks(reader: RowReader, key: str, chunk_bytes: int = 64 << 20) -> ChunkFn:
    """A chunk function copying tensor ``key`` unchanged."""
    info = reader.info(key)
    row = max(1, info.nbytes // max(1, info.shape[0])) if info.shape and info.shape[0] else 1
    rows = max(1, chunk_bytes // row)
    return lambda: reader.chunks(key, rows)


def execute(
    src: Union[str, Path],
    dst: Path,
    plan: Plan,
    reader: RowReader,
    *,
    progress: Optional[Progress] = None,
) -> Path:
    """Write ``dst`` = ``src`` with ``plan`` applied, atomically (temp file in the target folder + rename)."""
    doc, infos = load_header(src)
    tables = dict(doc["tables"])
    dropped = {k for tp in plan.tables.values() for k in tp.drop_keys}
    outputs: list[OutTensor] = []
    placed: set[str] = set()
    for key, info in sorted(infos.items(), key=lambda kv: kv[1].begin):
        owner = next((t for t, tp in plan.tables.items() if key in tp.drop_keys), None)
        if owner is not None:
            if owner not in placed:  # the table's outputs take the place of its first input tensor
                outputs.extend(plan.tables[owner].outputs)
                placed.add(owner)
            continue
        if key in dropped:
            continue
        outputs.append(OutTensor(key, info.dtype, info.shape, copy_chunks(reader, key)))
    for name, tp in plan.tables.items():
        tables[name] = tp.entry
        if name not in placed:
            outputs.extend(tp.outputs)
    keys = [o.key for o in outputs]
    if len(set(keys)) != len(keys):
        dup = sorted({k for k in keys if keys.count(k) > 1})
        raise CheckpointError(f"output would contain duplicate tensor keys {dup[:5]}")
    aliases = {a: k for a, k in (doc.get("aliases") or {}).items() if k in set(keys)}
    for name, tp in plan.tables.items():  # aliased modules point at the table's new tensors
        prefix = f"{name}." if name else ""
        for alias in tp.entry.get("aliases", []):
            for o in tp.outputs:
                if o.key.startswith(prefix):
                    aliases[f"{alias}.{o.key[len(prefix):]}"] = o.key
    meta = build_metadata(tables, aliases, doc.get("model"), doc.get("extra"))
    total = output_bytes(outputs)
    with atomic_path(dst) as tmp:
        with open(tmp, "wb") as fh:
            writer = StreamingWriter(fh, [(o.key, o.dtype, tuple(o.shape)) for o in outputs], meta)
            for o in outputs:
                for chunk in o.chunks():
                    if chunk.dtype != o.dtype:
                        raise CheckpointError(f"internal error: {o.key} chunk dtype {chunk.dtype} != {o.dtype}")
                    writer.write(o.key, chunk)
                    if progress is not None:
                        progress(chunk.numel() * chunk.element_size(), total)
            writer.close()
    return dst


def output_bytes(plan_outputs: list[OutTensor]) -> int:
    """Total bytes of a list of output tensors (for progress totals)."""
    total = 0
    for o in plan_outputs:
        total += int(np.prod(o.shape, dtype=np.int64)) * torch.empty((), dtype=o.dtype).element_size()
    return total
