"""Streaming checkpoint transformations: read tables in row chunks, write the output incrementally.

A transformation is a :class:`Plan`: for some tables, the tensors to drop and the output tensors to
produce (each a known dtype/shape plus a generator of row chunks), with the new schema entry. Every other
tensor is copied unchanged, also in chunks. Peak memory is a few chunks, whatever the table size: input
rows are zero-copy views of a memory mapping of the file, and each chunk's pages are dropped from the
process once it has been consumed.
"""

from __future__ import annotations

import mmap
import queue
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Optional, Union

import numpy as np
import torch

from .atomic import atomic_path
from .checkpoint import PRODUCER, load_header
from .errors import CheckpointError
from .ops.collapse import collapse_rows
from .safetensors_io import StreamingWriter, TensorInfo, read_header
from .schema import TableEntry

Progress = Callable[[int, int], None]  # (bytes just written, total bytes)
ChunkFn = Callable[[], Iterator[torch.Tensor]]


class RowReader:
    """Memory-mapped, zero-copy row ranges of the tensors in a safetensors file.

    Row chunks are views into a private (copy-on-write) mapping of the file, so reading costs no extra
    copy; :meth:`chunks` drops the pages of each chunk from the process once the consumer moves on
    (``madvise(MADV_DONTNEED)``), so resident memory stays at about one chunk whatever the table size.

    Example:
        >>> with RowReader("ckpt.safetensors") as r:   # doctest: +SKIP
        ...     for rows in r.chunks("emb.table", 65536):
        ...         ...
    """

    def __init__(self, path: Union[str, Path], key_renames: Optional[dict[str, str]] = None):
        self.path = Path(path)
        _, infos, self.data_start = read_header(self.path)
        # tensors are addressed by their current keys (a schema migration may have renamed some)
        renames = key_renames or {}
        self.infos = {renames.get(k, k): v for k, v in infos.items()}
        self._fh = open(self.path, "rb")
        size = self.path.stat().st_size
        self._mm = mmap.mmap(self._fh.fileno(), 0, access=mmap.ACCESS_COPY) if size else None

    def __enter__(self) -> "RowReader":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        """Unmap and close the file."""
        if self._mm is not None:
            try:
                self._mm.close()
            except BufferError:  # a caller still holds a view; the mapping goes when that view does
                pass
            self._mm = None
        if self._fh is not None:
            self._fh.close()
            self._fh = None

    def info(self, key: str) -> TensorInfo:
        """Header entry of ``key``."""
        try:
            return self.infos[key]
        except KeyError:
            raise CheckpointError(f"{self.path}: tensor {key!r} is missing") from None

    def _span(self, key: str, start: int, stop: int) -> tuple[int, int, tuple[int, ...]]:
        info = self.info(key)
        if len(info.shape) == 0:
            return self.data_start + info.begin, info.nbytes, ()
        row_elems = int(np.prod(info.shape[1:], dtype=np.int64))
        row_bytes = row_elems * torch.empty((), dtype=info.dtype).element_size()
        return self.data_start + info.begin + start * row_bytes, (stop - start) * row_bytes, (stop - start, *info.shape[1:])

    def rows(self, key: str, start: int, stop: int) -> torch.Tensor:
        """Rows ``[start, stop)`` of tensor ``key`` as a view of the mapping (the whole tensor if 0-d)."""
        info = self.info(key)
        offset, nbytes, shape = self._span(key, start, stop)
        if nbytes == 0 or self._mm is None:
            return torch.empty(shape, dtype=info.dtype)
        u8 = np.frombuffer(self._mm, dtype=np.uint8, count=nbytes, offset=offset)
        return torch.from_numpy(u8).view(info.dtype).reshape(shape)

    def release(self, key: str, start: int, stop: int) -> None:
        """Drop the pages of rows ``[start, stop)`` from this process (they stay in the page cache)."""
        if self._mm is None or not hasattr(self._mm, "madvise"):
            return
        offset, nbytes, _ = self._span(key, start, stop)
        page = mmap.PAGESIZE
        a = (offset // page) * page
        b = offset + nbytes
        if b > a:
            self._mm.madvise(mmap.MADV_DONTNEED, a, b - a)

    def full(self, key: str) -> torch.Tensor:
        """A copy of the whole tensor ``key`` (use for small tensors such as projections)."""
        info = self.info(key)
        return self.rows(key, 0, info.shape[0] if info.shape else 1).clone()

    def chunks(self, key: str, chunk_rows: int) -> Iterator[torch.Tensor]:
        """Successive row-chunk views of ``key`` (at most ``chunk_rows`` rows), released after use."""
        info = self.info(key)
        if not info.shape:
            yield self.full(key)
            return
        n = info.shape[0]
        if n == 0:
            yield self.rows(key, 0, 0)
            return
        for a in range(0, n, chunk_rows):
            b = min(n, a + chunk_rows)
            yield self.rows(key, a, b)
            self.release(key, a, b)


class TableRows:
    """``read_rows(start, stop)`` over one table's effective rows, for the streaming ops.

    Reads the ``weight`` factor of a plain table, the ``A`` factor of a low-rank one (``factor="A"``), or
    computes the n×d rows of MLET factors on the fly (``table @ proj.T``, at least float32). Each call
    releases the pages of the previous range, so resident memory stays at about one chunk.

    Attributes:
        num_rows, dim, dtype: shape and dtype of the rows returned. collapsed: MLET factors are collapsed.
    """

    def __init__(self, reader: RowReader, entry: TableEntry, factor: str = "weight"):
        self.reader = reader
        self.proj: Optional[torch.Tensor] = None
        self.collapsed = entry.kind == "mlet"
        if self.collapsed:
            self.key = entry.factors["table"].key
            self.proj = reader.full(entry.factors["proj"].key)
            self.dim = int(self.proj.shape[0])
        else:
            self.key = entry.factors[factor].key
            self.dim = int(reader.info(self.key).shape[1]) if len(reader.info(self.key).shape) == 2 else 0
        info = reader.info(self.key)
        self.num_rows = int(info.shape[0]) if info.shape else 0
        self.dtype = info.dtype if self.proj is None else torch.promote_types(info.dtype, torch.float32)
        self._last: Optional[tuple[int, int]] = None

    def __call__(self, start: int, stop: int) -> torch.Tensor:
        if self._last is not None:
            self.reader.release(self.key, *self._last)
        self._last = (start, stop)
        rows = self.reader.rows(self.key, start, stop)
        return rows if self.proj is None else collapse_rows(rows, self.proj, self.dtype)


@dataclass
class OutTensor:
    """One tensor of the output: key, dtype, shape and a function returning its row chunks."""

    key: str
    dtype: torch.dtype
    shape: tuple[int, ...]
    chunks: ChunkFn

    @property
    def nbytes(self) -> int:
        """Size of the tensor's data in bytes."""
        return int(np.prod(self.shape, dtype=np.int64)) * torch.empty((), dtype=self.dtype).element_size()


@dataclass
class TablePlan:
    """How one table is rewritten: input keys replaced by output tensors, and its new schema entry."""

    drop_keys: list[str]
    outputs: list[OutTensor]
    entry: TableEntry


@dataclass
class Plan:
    """A whole-checkpoint transformation."""

    tables: dict[str, TablePlan] = field(default_factory=dict)


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
    header, _ = load_header(src)
    infos = reader.infos  # by current key
    tables = dict(header.tables)
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
    aliases = {a: k for a, k in header.aliases.items() if k in set(keys)}
    for name, tp in plan.tables.items():  # aliased modules point at the table's new tensors
        prefix = f"{name}." if name else ""
        for alias in tp.entry.aliases:
            for o in tp.outputs:
                if o.key.startswith(prefix):
                    aliases[f"{alias}.{o.key[len(prefix):]}"] = o.key
    meta = header.with_tables(tables, aliases).to_metadata(PRODUCER)
    total = sum(o.nbytes for o in outputs)
    with atomic_path(dst) as tmp:
        with open(tmp, "wb") as fh:
            writer = StreamingWriter(fh, [(o.key, o.dtype, tuple(o.shape)) for o in outputs], meta)
            _write_overlapped(writer, outputs, progress, total)
            writer.close()
    return dst


def _write_overlapped(writer: StreamingWriter, outputs: list[OutTensor], progress: Optional[Progress], total: int) -> None:
    """Produce chunks in this thread and write them in another, so computing chunk i+1 overlaps the
    write of chunk i (both release the GIL). At most two chunks wait in the queue: memory stays bounded."""
    q: queue.Queue = queue.Queue(maxsize=2)
    failed: list[BaseException] = []

    def drain() -> None:
        try:
            while (item := q.get()) is not None:
                writer.write(*item)
        except BaseException as exc:  # noqa: BLE001 - re-raised in the producer thread
            failed.append(exc)
            while q.get() is not None:  # keep the producer from blocking on a full queue
                pass

    thread = threading.Thread(target=drain, name="mlet-compress-writer", daemon=True)
    thread.start()
    try:
        for o in outputs:
            for chunk in o.chunks():
                if failed:
                    break
                if chunk.dtype != o.dtype:
                    raise CheckpointError(f"internal error: {o.key} chunk dtype {chunk.dtype} != {o.dtype}")
                q.put((o.key, chunk))
                if progress is not None:
                    progress(chunk.numel() * chunk.element_size(), total)
            if failed:
                break
    finally:
        q.put(None)
        thread.join()
    if failed:
        raise failed[0]
