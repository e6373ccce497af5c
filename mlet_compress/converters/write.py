"""Writing a :class:`~mlet_compress.converters.sources.Source` in another format.

- :func:`write_mlet`: a plain state dict → an mlet-compress checkpoint (every tensor carried byte for
  byte, plus the schema header describing the tables);
- :func:`write_plain`: any source → a plain state dict with the original key names (``.safetensors``
  without the schema, or ``torch.save``): MLET factors collapsed, low-rank factors multiplied out,
  quantized codes dequantized, so the model loads with ``load_state_dict(strict=True)``.

Both stream safetensors inputs a few row chunks at a time; one dense table at a time is built in memory
when a compressed table is expanded.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Optional

import torch

from ..atomic import atomic_path
from ..checkpoint import PRODUCER, save_checkpoint
from ..lookup import dense_weight
from ..safetensors_io import StreamingWriter
from ..schema import CheckpointHeader, TableEntry, table_key
from ..table_modules import module_from_entry
from .detect import Detection
from .sources import Source

ChunkFn = Callable[[], Iterator[torch.Tensor]]


@dataclass
class ConvertReport:
    """What :func:`~mlet_compress.converters.convert_checkpoint` did.

    Attributes:
        source / source_format / output / target: input, its format, the written file and its format.
        tables: table name → ``{"layout", "rows", "dim", "bytes_before", "bytes_after", "action", "why"}``.
        rejected: tensor key → why a 2-D floating weight was not taken as a table (plain inputs).
        carried / carried_bytes: other tensors copied unchanged, and their bytes.
        notes: one-line remarks (dequantized tables, hashed tables, aliases, skipped pickle keys, ...).
        file_bytes_before / file_bytes_after: sizes of the input file(s) and of the output.
    """

    source: str
    source_format: str
    output: Optional[Path] = None
    target: str = ""
    tables: dict[str, dict[str, Any]] = field(default_factory=dict)
    rejected: dict[str, str] = field(default_factory=dict)
    carried: int = 0
    carried_bytes: int = 0
    notes: list[str] = field(default_factory=list)
    file_bytes_before: int = 0
    file_bytes_after: int = 0

    @property
    def bytes_before(self) -> int:
        """Total table bytes in the input."""
        return sum(int(t["bytes_before"]) for t in self.tables.values())

    @property
    def bytes_after(self) -> int:
        """Total table bytes in the output."""
        return sum(int(t["bytes_after"]) for t in self.tables.values())

    @staticmethod
    def note_text(note: str, bag_mode: str = "bag_mode='sum' or 'mean'") -> str:
        """A note with the option it names spelled for the reader (Python by default)."""
        return note.replace("{bag_mode}", bag_mode)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form (the CLI's ``--json``)."""
        return {"source": self.source, "source_format": self.source_format,
                "output": str(self.output) if self.output else None, "target": self.target, "tables": self.tables,
                "rejected": self.rejected, "notes": [self.note_text(n) for n in self.notes],
                "totals": {"tables": len(self.tables), "bytes_before": self.bytes_before, "bytes_after": self.bytes_after,
                           "other_tensors": self.carried, "other_bytes": self.carried_bytes,
                           "file_bytes_before": self.file_bytes_before, "file_bytes_after": self.file_bytes_after}}


def _stream(dst: Path, items: list[tuple[str, torch.dtype, tuple[int, ...], ChunkFn]], metadata: dict[str, str]) -> None:
    """Write ``items`` (key, dtype, shape, chunk function) as one safetensors file, atomically."""
    with atomic_path(dst) as tmp, open(tmp, "wb") as fh:
        writer = StreamingWriter(fh, [(k, dt, tuple(s)) for k, dt, s, _ in items], metadata)
        for key, dtype, _, chunks in items:
            for chunk in chunks():
                writer.write(key, chunk.to(dtype) if chunk.dtype != dtype else chunk)
        writer.close()


def _table_bytes(source: Source, entry: TableEntry) -> int:
    return sum(source.metas[k].nbytes for k in entry.tensor_keys() if k in source.metas)


def write_mlet(source: Source, dst: Path, det: Detection, report: ConvertReport) -> None:
    """Write ``source`` as an mlet-compress checkpoint describing ``det.tables`` (all tensors unchanged)."""
    extra = {"converted_from": source.path.name, "source_format": source.format,
             "source_metadata": dict(source.metadata), "skipped_non_tensor_keys": list(source.skipped)}
    state = source.state_dict()
    if state is not None:  # a pickle: shared tensors become aliases
        save_checkpoint(state, dst, tables=dict(det.tables), extra=extra)
    else:
        header = CheckpointHeader(dict(det.tables), {}, None, extra)
        header.validate(source.metas, str(dst))
        items = [(k, m.dtype, m.shape, (lambda k=k: source.chunks(k))) for k, m in source.metas.items()]
        _stream(dst, items, header.to_metadata(PRODUCER))
    table_keys = {k for e in det.tables.values() for k in e.tensor_keys()}
    for name, e in det.tables.items():
        b = _table_bytes(source, e)
        report.tables[name] = {"layout": e.display_kind(), "rows": e.num_embeddings, "dim": e.embedding_dim, "bytes_before": b,
                               "bytes_after": b, "action": "described", "why": det.why.get(name, "")}
    others = [m for k, m in source.metas.items() if k not in table_keys]
    report.carried, report.carried_bytes = len(others), sum(m.nbytes for m in others)
    report.rejected = dict(det.rejected)
    if det.tables and det.bag_mode is None:
        report.notes.append("tables are recorded as nn.Embedding; pass {bag_mode} if the model looks them up as "
                            "nn.EmbeddingBag")
    if source.skipped:
        report.notes.append(f"non-tensor entries left out: {source.skipped[:8]}")


def _dense_chunks(source: Source, entry: TableEntry) -> ChunkFn:
    def chunks() -> Iterator[torch.Tensor]:
        tensors = {k: source.tensor(k) for k in entry.tensor_keys()}
        yield dense_weight(module_from_entry(entry, tensors)).contiguous()
    return chunks


def _plain_table(source: Source, entry: TableEntry) -> tuple[torch.dtype, ChunkFn, str]:
    """How one table of an mlet-compress file is written plain: (dtype, chunks, what was done)."""
    if entry.kind == "plain":
        key = entry.factors["weight"].key
        return source.metas[key].dtype, (lambda: source.chunks(key)), "copied"
    action = {"mlet": "collapsed (table @ proj.T)", "lowrank": "multiplied out (A @ B)"}.get(entry.kind)
    if entry.kind == "quantized":
        action = f"dequantized ({entry.quant.bits}-bit codes → float32)"
    return torch.float32, _dense_chunks(source, entry), action


def _plain_items(source: Source, report: ConvertReport) -> list[tuple[str, torch.dtype, tuple[int, ...], ChunkFn]]:
    """The keys of a plain state dict of an mlet-compress source, tables at their first tensor's place."""
    header = source.header
    owner = {k: n for n, e in header.tables.items() for k in e.tensor_keys()}
    items, placed = [], set()
    for key, meta in source.metas.items():
        name = owner.get(key)
        if name is None:
            items.append((key, meta.dtype, meta.shape, (lambda k=key: source.chunks(k))))
            report.carried += 1
            report.carried_bytes += meta.nbytes
            continue
        if name in placed:
            continue
        placed.add(name)
        entry = header.tables[name]
        dtype, chunks, action = _plain_table(source, entry)
        shape = (entry.num_embeddings, entry.embedding_dim)
        for mod in (name, *entry.aliases):
            items.append((table_key(mod, "weight"), dtype, shape, chunks))
        after = shape[0] * shape[1] * torch.empty((), dtype=dtype).element_size()
        report.tables[name] = {"layout": entry.display_kind(), "rows": shape[0], "dim": shape[1],
                               "bytes_before": _table_bytes(source, entry), "bytes_after": after, "action": action,
                               "why": ""}
        if entry.kind == "quantized":
            report.notes.append(f"table {name!r}: {action}; the values are the quantized ones, the size is not")
        if entry.hash is not None:
            report.notes.append(f"table {name!r} is hashed: {entry.num_embeddings} rows, lookups must use "
                                f"idx % {entry.num_embeddings} (HashedEmbedding)")
        if entry.aliases:
            report.notes.append(f"table {name!r}: written again under its aliases {list(entry.aliases)}")
    for alias, key in header.aliases.items():
        if key in owner:
            continue  # a table's aliases were written with the table
        meta = source.metas[key]
        items.append((alias, meta.dtype, meta.shape, (lambda k=key: source.chunks(k))))
    return items


def write_plain(source: Source, dst: Path, report: ConvertReport, *, as_torch: bool) -> None:
    """Write ``source`` as a plain state dict (original key names) to a safetensors file or a pickle."""
    if source.is_mlet:
        items = _plain_items(source, report)
        meta = source.header.extra.get("source_metadata") or {"format": "pt"}
    else:
        items = [(k, m.dtype, m.shape, (lambda k=k: source.chunks(k))) for k, m in source.metas.items()]
        report.carried, report.carried_bytes = len(items), sum(m.nbytes for m in source.metas.values())
        meta = dict(source.metadata) or {"format": "pt"}
        if source.skipped:
            report.notes.append(f"non-tensor entries left out: {source.skipped[:8]}")
    if as_torch:
        state = {key: torch.cat([c.clone() for c in chunks()]) if len(shape) else next(iter(chunks())).clone()
                 for key, _, shape, chunks in items}
        with atomic_path(dst) as tmp:
            torch.save(state, tmp)
    else:
        _stream(dst, items, {str(k): str(v) for k, v in meta.items()})


__all__ = ["ConvertReport", "write_mlet", "write_plain"]
