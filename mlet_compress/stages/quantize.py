"""The quantization stage: 2–8-bit uniform symmetric codes with an L2 grid-searched scale (paper §4.3).

- op: :func:`~mlet_compress.ops.quant.quantize_tensor` (search, quantize, pack);
- module handler: :func:`~mlet_compress.layers.quantized.to_quantized` (plain tables, or the A factor of a
  low-rank table, whose B stays float);
- file plan: a scale-search pass and an error pass over memory-mapped row chunks (the error goes in the
  header, which is written before the data), then the packed codes streamed chunk by chunk;
- order: last (after collapse and SVD); a table is quantized once.
"""

from __future__ import annotations

from typing import Any, Optional

import torch
from torch import nn

from ..config import QuantConfig
from ..errors import ConfigError
from ..layers.quantized import to_quantized
from ..ops.quant import iter_quantized_rows, packed_cols, quantization_error, quantize_tensor, search_scale, sqnr_db
from ..safetensors_io import dtype_name
from ..schema import Factor, QuantSpec, StageRecord, TableEntry, table_key
from ..streaming import OutTensor, RowReader, TablePlan, TableRows
from .base import Candidate, OrderRule, Stage, register
from .lowrank import collapsed_view

ORDER = OrderRule(refuse={
    "mlet": "holds uncollapsed MLET factors; collapse(model) first",
    "quantized": "is already quantized",
}, collapse_first=True)


def record(cfg: QuantConfig, l2_error: float, sqnr: float) -> StageRecord:
    """The stage record of one table (the same for models and files); ``scale_dtype`` only when not fp32."""
    return StageRecord.make("quantize", bits=cfg.bits, granularity=cfg.granularity, grid=cfg.grid,
                            scale_dtype=None if cfg.scale_dtype == "fp32" else cfg.scale_dtype,
                            l2_error=l2_error, sqnr_db=sqnr)


def suffix(cfg: QuantConfig) -> str:
    """``q8`` for per-table, ``q8row`` for per-row scales; ``-fp16`` appended for float16 scales."""
    return f"q{cfg.bits}" + ("row" if cfg.granularity == "row" else "") + ("-fp16" if cfg.scale_dtype == "fp16" else "")


def _skip(c: Candidate, cfg: QuantConfig) -> Optional[str]:
    return "a 1-dim table is left in float" if c.dim < 2 else None


def _to_module(name: str, mod: nn.Module, cfg: QuantConfig) -> tuple[nn.Module, StageRecord]:
    weight = mod.A if hasattr(mod, "A") else mod.weight
    if not weight.is_floating_point():
        raise ConfigError(f"table {name!r} has dtype {weight.dtype}; only float tables can be quantized")
    new = to_quantized(mod, bits=cfg.bits, grid=cfg.grid, granularity=cfg.granularity, chunk_rows=cfg.chunk_rows,
                       scale_dtype=cfg.scale_dtype)
    return new, record(cfg, new.l2_error, new.sqnr_db)


def _plan(entry: TableEntry, reader: RowReader, cfg: QuantConfig) -> tuple[TablePlan, dict[str, Any]]:
    name, lowrank = entry.name, entry.kind == "lowrank"
    rows = TableRows(reader, entry, "A" if lowrank else "weight")
    if not rows.dtype.is_floating_point:
        raise ConfigError(f"table {name!r} has dtype {rows.dtype}; only float tables can be quantized")
    n, c, d, where = rows.num_rows, rows.dim, entry.embedding_dim, f"table {name!r}"
    scale = search_scale(rows, bits=cfg.bits, grid=cfg.grid, granularity=cfg.granularity, num_rows=n,
                         chunk_rows=cfg.chunk_rows, name=where, scale_dtype=cfg.scale_dtype)
    B = reader.full(entry.factors["B"].key).to(torch.float32) if lowrank else None
    err, sig = quantization_error(rows, scale, cfg.bits, B=B, num_rows=n, chunk_rows=cfg.chunk_rows, name=where)
    l2, sqnr = err ** 0.5, sqnr_db(sig, err)

    def code_chunks():
        for ch in iter_quantized_rows(rows, scale, cfg.bits, num_rows=n, chunk_rows=cfg.chunk_rows, name=where):
            yield ch.packed

    quant = QuantSpec(cfg.bits, cfg.granularity, table_key(name, "scale"), dtype_name(scale.dtype))
    codes = table_key(name, "codes")
    scale_out = scale.contiguous()  # in its storage dtype: the codes were computed with exactly these values
    outputs = [OutTensor(codes, torch.uint8, (n, packed_cols(c, cfg.bits)), code_chunks)]
    if lowrank:
        factors = {"A": Factor(codes, (n, c), "float32", quant), "B": Factor(table_key(name, "B"), (c, d), "float32")}
        outputs.append(OutTensor(table_key(name, "B"), torch.float32, (c, d), lambda: iter([B.contiguous()])))
    else:
        factors = {"weight": Factor(codes, (n, d), "float32", quant)}
    outputs.append(OutTensor(quant.scale_key, scale_out.dtype, tuple(scale_out.shape), lambda: iter([scale_out])))
    new = collapsed_view(entry).with_stage(record(cfg, l2, sqnr), kind="quantized", factors=factors,
                                           base="lowrank" if lowrank else "plain")
    stats = {"rows": n, "dim": d, **record(cfg, l2, sqnr).to_json()}
    return TablePlan(entry.tensor_keys(), outputs, new), stats


register(Stage(
    name="quantize", config=QuantConfig, op=quantize_tensor, to_module=_to_module, plan_file=_plan, order=ORDER,
    skip_reason=_skip, suffix=suffix,
))

__all__ = ["ORDER", "record", "suffix"]
