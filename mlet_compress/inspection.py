"""Structured summaries of checkpoints (what ``mlet-compress inspect`` prints): the embedding tables of an
mlet-compress checkpoint (:func:`inspect_checkpoint`), or the tensors of a plain state dict and the tables
``convert`` would pick (:func:`inspect_state_dict`); :func:`inspect_path` takes either."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Union

from .checkpoint import load_header
from .converters import detect_tables, open_source


@dataclass(frozen=True)
class TableSummary:
    """One table as ``inspect`` shows it.

    Attributes:
        name: module name. layout: kind plus what shapes it (``quantized(lowrank, 8b/row)+hashed``).
        rows: stored rows. n: logical index space (before hashing). k: MLET inner dim or low-rank rank.
        d: embedding dim. dtype: storage dtype (``int4`` for 4-bit codes). bytes: tensor bytes.
        stages: the stage chain as labels. aliases: other module names of the table.
    """

    name: str
    layout: str
    rows: int
    n: int
    k: Optional[int]
    d: int
    dtype: str
    bytes: int
    stages: list[str]
    aliases: list[str]


@dataclass(frozen=True)
class CheckpointSummary:
    """What :func:`inspect_checkpoint` returns; :meth:`to_dict` is the ``--json`` output."""

    path: str
    schema_version: int
    model: Optional[dict]
    tables: list[TableSummary]
    totals: dict[str, int]

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form."""
        return dataclasses.asdict(self)


def inspect_checkpoint(path: Union[str, Path]) -> CheckpointSummary:
    """Summarise a checkpoint: per table name/kind/rows/(n, k, d)/dtype/bytes/stages, plus totals.

    ``n`` is the logical index space (before hashing), ``rows`` the stored rows; ``k`` is the MLET inner
    dim or the low-rank rank (``None`` for plain/quantized plain tables).

    Example:
        >>> inspect_checkpoint("model.safetensors").totals["tables"]  # doctest: +SKIP
        26
    """
    header, infos = load_header(path)
    infos = {header.key_renames.get(k, k): v for k, v in infos.items()}
    rows_out = []
    table_keys: set[str] = set()
    for name, ent in sorted(header.tables.items()):
        keys = ent.tensor_keys()
        table_keys.update(keys)
        first = ent.factors.get("table") or ent.factors.get("A") or ent.factors["weight"]
        rows_out.append(TableSummary(
            name=name, layout=ent.display_kind(), rows=ent.num_embeddings, n=ent.logical_rows,
            k=ent.inner_dim or ent.rank, d=ent.embedding_dim,
            dtype=f"int{first.quant.bits}" if first.quant else str(infos[first.key].dtype).replace("torch.", ""),
            bytes=sum(infos[key].nbytes for key in keys), stages=[s.label() for s in ent.stages], aliases=list(ent.aliases),
        ))
    other = [i for key, i in infos.items() if key not in table_keys]
    totals = {"tables": len(rows_out), "table_bytes": sum(r.bytes for r in rows_out), "other_tensors": len(other),
              "other_bytes": sum(i.nbytes for i in other), "file_bytes": Path(path).stat().st_size}
    return CheckpointSummary(str(path), header.schema_version, header.model, rows_out, totals)


@dataclass(frozen=True)
class StateDictSummary:
    """A plain state dict (no mlet-compress schema) as ``inspect`` shows it.

    Attributes:
        path / format: the input and its format (``safetensors``, ``safetensors-sharded``, ``torch``, ...).
        tensors: ``{"key", "dtype", "shape", "bytes"}`` per tensor, in file order.
        tables: the tables ``convert`` would pick: name → ``{"kind", "rows", "dim", "why"}``.
        rejected: 2-D floating weights not taken as tables → why.
        totals: ``tensors``, ``tables``, ``table_bytes``, ``other_bytes``, ``file_bytes``.
    """

    path: str
    format: str
    tensors: list[dict[str, Any]]
    tables: dict[str, dict[str, Any]]
    rejected: dict[str, str]
    totals: dict[str, int]

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form."""
        return dataclasses.asdict(self)


def inspect_state_dict(path: Union[str, Path], tables: Optional[str] = None, *,
                       bag_mode: Optional[str] = None) -> StateDictSummary:
    """List a plain state dict's tensors and the embedding tables ``convert`` would pick (and why).

    Args:
        path: a plain ``.safetensors`` file, shard index, Hugging Face model folder or ``.pt``/``.bin`` pickle.
        tables / bag_mode: as :func:`mlet_compress.converters.convert_checkpoint`.

    Raises:
        CheckpointError: unreadable input. ConfigError: bad ``tables``/``bag_mode``.

    Example:
        >>> sorted(inspect_state_dict("model.safetensors").tables)   # doctest: +SKIP
        ['bert.embeddings.position_embeddings', 'bert.embeddings.word_embeddings']
    """
    with open_source(path) as src:
        det = detect_tables(src.metas, tables, bag_mode=bag_mode)
        tensors = [{"key": m.key, "dtype": str(m.dtype).replace("torch.", ""), "shape": list(m.shape), "bytes": m.nbytes}
                   for m in src.metas.values()]
        table_keys = {k for e in det.tables.values() for k in e.tensor_keys()}
        table_bytes = sum(src.metas[k].nbytes for k in table_keys)
        totals = {"tensors": len(tensors), "tables": len(det.tables), "table_bytes": table_bytes,
                  "other_bytes": sum(t["bytes"] for t in tensors) - table_bytes, "file_bytes": src.file_bytes}
        return StateDictSummary(str(path), src.format, tensors, det.to_dict()["tables"], dict(det.rejected), totals)


def inspect_path(path: Union[str, Path], tables: Optional[str] = None, *,
                 bag_mode: Optional[str] = None) -> Union[CheckpointSummary, StateDictSummary]:
    """:func:`inspect_checkpoint` for an mlet-compress checkpoint, :func:`inspect_state_dict` for anything else.

    Raises:
        CheckpointError: unreadable input.
    """
    with open_source(path) as src:
        is_mlet = src.is_mlet
    if is_mlet:
        return inspect_checkpoint(path)
    return inspect_state_dict(path, tables, bag_mode=bag_mode)
