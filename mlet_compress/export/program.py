"""``export_program``'s work: a ``torch.export`` program of the lookups (or of a whole model with its tables
swapped for :class:`~mlet_compress.export.torch_lookup.ExportLookup`), saved with ``torch.export.save``.

Tables keep their stored form (packed codes + scale for quantized tables, at the checkpoint's size).
"""

from __future__ import annotations

import io
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..atomic import atomic_write_bytes
from ..errors import ConfigError
from .report import ExportResult, collect_notes, export_bytes, graph_form, signature
from .sources import ModelSource, swap_tables
from .tables import TableSpec, table_spec
from .torch_lookup import ExportLookup, LookupSet


def _example(spec: TableSpec, per_sample_weights: bool) -> tuple[list[torch.Tensor], list[dict]]:
    """Example inputs (distinct sizes, so no dimension is specialised) and their dynamic shapes."""
    n = torch.export.Dim(f"N_{_dim_name(spec.name)}", min=0)
    idx = torch.tensor([0, 1, 1, 0, 1], dtype=torch.int64) % spec.num_rows
    if not spec.bag:
        return [idx], [{0: n}]
    k = torch.export.Dim(f"B_{_dim_name(spec.name)}", min=1)
    offs = torch.tensor([0, 2, 2] + ([5] if spec.include_last_offset else []), dtype=torch.int64)
    ex, dyn = [idx, offs], [{0: n}, {0: k + 1 if spec.include_last_offset else k}]  # k: the number of bags
    if per_sample_weights and spec.mode == "sum":
        ex.append(torch.ones(5))
        dyn.append({0: n})
    return ex, dyn


def _dim_name(name: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in name)


def _tables_program(specs: list[TableSpec], per_sample_weights: bool, result: ExportResult):
    mod = LookupSet(specs, per_sample_weights).eval()
    inputs, dyn = {}, {}
    for spec in specs:
        ex, d = _example(spec, per_sample_weights)
        for key, t, shape in zip(mod.inputs[spec.name], ex, d):
            inputs[key], dyn[key] = t, shape
            dims = [f"N_{spec.name}" if "per_sample" in key or key.endswith(".indices") else f"B_{spec.name}"]
            result.inputs[key] = signature("float32" if t.is_floating_point() else "int64", dims)
        out = [f"B_{spec.name}", spec.embedding_dim] if spec.bag else [f"N_{spec.name}", spec.embedding_dim]
        result.outputs[spec.name] = signature("float32", out)
    return torch.export.export(mod, (inputs,), dynamic_shapes=(dyn,), strict=False)


def _model_program(src: ModelSource, result: ExportResult) -> tuple[Any, list[TableSpec]]:
    specs: list[TableSpec] = []

    def make(name: str, table: nn.Module) -> nn.Module:
        specs.append(table_spec(name, table))
        return ExportLookup(specs[-1])

    swapped, _ = swap_tables(src.model, make)
    if not specs:
        raise ConfigError(f"{type(src.model).__name__} has no embedding table to export")
    batch = torch.export.Dim("batch", min=1)
    dyn = tuple({0: batch} if isinstance(x, torch.Tensor) and x.dim() else None for x in src.example_inputs)
    prog = torch.export.export(swapped.eval(), tuple(src.example_inputs), dynamic_shapes=dyn, strict=False)
    for name, x in zip(src.input_names, src.example_inputs):
        dims = ["batch"] + list(x.shape[1:])
        result.inputs[name] = signature(str(x.dtype).replace("torch.", ""), dims)
    with torch.no_grad():
        y = swapped(*src.example_inputs)
    result.outputs[src.output_names[0]] = signature(str(y.dtype).replace("torch.", ""), ["batch"] + list(y.shape[1:]))
    return prog, specs


def write_program(source: Any, dst: Path, *, per_sample_weights: bool) -> ExportResult:
    """Export a resolved source (tables dict or :class:`ModelSource`) with ``torch.export`` and save it."""
    what = "model" if isinstance(source, ModelSource) else "tables"
    result = ExportResult(output=dst, format="pt2", what=what)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if what == "model":
            prog, specs = _model_program(source, result)
        else:
            specs = [table_spec(name, mod) for name, mod in source.items()]
            prog = _tables_program(specs, per_sample_weights, result)
    for spec in specs:
        result.tables[spec.name] = {"layout": spec.describe(), "graph": graph_form(spec, "packed", "pt2"),
                                    "bytes_source": spec.stored_bytes(), "bytes_export": export_bytes(spec, "packed")}
    result.add_notes(collect_notes(specs, "packed", "pt2"))
    buf = io.BytesIO()
    torch.export.save(prog, buf)
    atomic_write_bytes(dst, buf.getvalue())
    result.bytes = len(buf.getvalue())
    return result


__all__ = ["write_program"]
