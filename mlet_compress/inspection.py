"""A structured summary of a checkpoint's embedding tables (what ``mlet-compress inspect`` prints)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Union

from .checkpoint import load_header


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
