"""The low-rank stage: replace a trained n×d table by its best rank-r factors A (n×r) and B (r×d).

- op: :func:`~mlet_compress.ops.svd.low_rank_factors` (float64 Gram matrix over row chunks, Eckart–Young);
- module handler: :func:`~mlet_compress.layers.lowrank.to_low_rank`;
- file plan: one Gram pass over memory-mapped row chunks, then A streamed chunk by chunk;
- order: after collapse (a file's MLET factors are collapsed on the fly), before quantization;
- a table whose chosen rank saves nothing (r·(n+d) ≥ n·d values) is left as it is and reported in
  ``CompressReport.skipped`` with the reason, for models and files alike (:func:`saves_nothing`).
"""

from __future__ import annotations

from typing import Any, Optional

import torch
from torch import nn

from ..config import LowRankConfig
from ..errors import ConfigError
from ..layers.lowrank import to_low_rank
from ..ops.svd import iter_projected_rows, low_rank_factors, plan_low_rank
from ..safetensors_io import dtype_name
from ..schema import Factor, StageRecord, TableEntry, table_key
from ..streaming import OutTensor, RowReader, TablePlan, TableRows
from .base import Candidate, OrderRule, Skipped, Stage, register

ORDER = OrderRule(refuse={
    "mlet": "holds uncollapsed MLET factors; collapse(model) first (SVD applies to the trained n×d table)",
    "lowrank": "is already low-rank; apply SVD to the original table",
    "quantized": "is already quantized; apply SVD before quantizing (svd before quantize: MLET → collapse → SVD → quantize)",
}, collapse_first=True)


def record(cfg: LowRankConfig, rank: int, rel_error: float) -> StageRecord:
    """The stage record of one table (the same for models and files)."""
    return StageRecord.make("svd", rank=rank, rel_error=rel_error, energy=cfg.energy)


def _skip(c: Candidate, cfg: LowRankConfig) -> Optional[str]:
    return "a 1-dim table has nothing to factorise" if c.dim < 2 else None


def _check(c: Candidate, cfg: LowRankConfig) -> None:
    if cfg.rank is not None and cfg.rank > c.dim:
        raise ConfigError(f"table {c.name!r}: rank {cfg.rank} exceeds its embedding dim {c.dim}")


def saves_nothing(n: int, d: int, rank: int) -> Optional[Skipped]:
    """``Skipped`` with the reason when rank-``rank`` factors of an n×d table hold as many values as the table
    (r·(n+d) ≥ n·d), else None.

    Example:
        >>> saves_nothing(1000, 8, 8).reason
        'rank 8 of d=8 saves nothing: A and B hold 8·(1000+8) = 8064 values, the table 1000·8 = 8000; left as it is (lower the energy or the rank)'
        >>> saves_nothing(1000, 8, 4) is None
        True
    """
    if rank * (n + d) < n * d:
        return None
    return Skipped(f"rank {rank} of d={d} saves nothing: A and B hold {rank}·({n}+{d}) = {rank * (n + d)} values, "
                   f"the table {n}·{d} = {n * d}; left as it is (lower the energy or the rank)")


def _to_module(name: str, mod: nn.Module, cfg: LowRankConfig) -> tuple[nn.Module, StageRecord] | Skipped:
    n, d = int(mod.num_embeddings), int(mod.embedding_dim)
    new = to_low_rank(mod, rank=cfg.rank, energy=cfg.energy, chunk_rows=cfg.chunk_rows)
    return saves_nothing(n, d, new.rank) or (new, record(cfg, new.rank, new.rel_error))


def _plan(entry: TableEntry, reader: RowReader, cfg: LowRankConfig) -> tuple[TablePlan, dict[str, Any]] | Skipped:
    name = entry.name
    rows = TableRows(reader, entry)
    lr = plan_low_rank(rows, num_rows=rows.num_rows, rank=cfg.rank, energy=cfg.energy, chunk_rows=cfg.chunk_rows,
                       name=f"table {name!r}")
    skip = saves_nothing(rows.num_rows, rows.dim, lr.rank)  # after the Gram pass, which checks NaN/Inf too
    if skip is not None:
        return skip
    out_dtype = rows.dtype if rows.dtype in (torch.float32, torch.float64) else torch.float32
    n, r, d = rows.num_rows, lr.rank, rows.dim

    def a_chunks():
        for _, _, a in iter_projected_rows(rows, lr, num_rows=n, chunk_rows=cfg.chunk_rows, out_dtype=out_dtype,
                                           name=f"table {name!r}"):
            yield a

    B = lr.B(out_dtype)
    base = collapsed_view(entry)
    new = base.with_stage(record(cfg, r, lr.rel_error), kind="lowrank", embedding_dim=d, factors={
        "A": Factor(table_key(name, "A"), (n, r), dtype_name(out_dtype)),
        "B": Factor(table_key(name, "B"), (r, d), dtype_name(out_dtype))})
    outputs = [OutTensor(table_key(name, "A"), out_dtype, (n, r), a_chunks),
               OutTensor(table_key(name, "B"), out_dtype, (r, d), lambda: iter([B]))]
    stats = {"rows": n, "dim": d, "rank": r, "rel_error": lr.rel_error}
    return TablePlan(entry.tensor_keys(), outputs, new), stats


def collapsed_view(entry: TableEntry) -> TableEntry:
    """The history an entry has once its MLET factors are collapsed (unchanged for other kinds)."""
    return entry.with_stage(StageRecord.make("collapse")) if entry.kind == "mlet" else entry


register(Stage(
    name="svd", config=LowRankConfig, op=low_rank_factors, to_module=_to_module, plan_file=_plan, order=ORDER,
    skip_reason=_skip, check_table=_check, suffix=lambda cfg: "svd",
))

__all__ = ["ORDER", "record", "collapsed_view", "saves_nothing"]
