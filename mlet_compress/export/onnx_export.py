"""``export_onnx``: lookup tables as an ONNX graph built directly, or a whole model via ``torch.onnx`` with its
embedding lookups replaced by the same graphs (so quantized tables stay quantized).

Whole models: each table is swapped for a 2-row float stub with a unique fingerprint, the model is exported
with the dynamo-based ``torch.onnx.export`` (batch dimension dynamic), and every ``Gather`` that reads a stub
is replaced by the table's lookup nodes from :mod:`.onnx_graph`. Only tables called like ``nn.Embedding``
(one index tensor) can be swapped this way; the seven CTR models call all tables so.
"""

from __future__ import annotations

import logging
import os
import tempfile
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch
import torch.nn.functional as F
from onnx import TensorProto, helper, numpy_helper
from torch import nn

from ..atomic import atomic_write_bytes
from ..errors import ConfigError
from .onnx_graph import MIN_OPSET, Graph, add_lookup
from .report import ExportResult, check_low_bit, collect_notes, export_bytes, graph_form, signature
from .sources import ModelSource, swap_tables
from .tables import TableSpec, table_spec
from .torch_lookup import input_names

#: Serialized models above this size keep their tensors in ``<output>.data`` (protobuf's 2 GiB limit).
EXTERNAL_DATA_BYTES = 1_800_000_000


def check_opset(opset: int) -> int:
    """Raises ConfigError for an opset below :data:`MIN_OPSET` or above what the installed onnx knows."""
    top = onnx.defs.onnx_opset_version()
    if isinstance(opset, bool) or not isinstance(opset, int) or not MIN_OPSET <= opset <= top:
        raise ConfigError(f"opset={opset!r}: the lookups need opset {MIN_OPSET}..{top} (installed onnx "
                          f"{onnx.__version__}); fix {{option}}", option="opset", value=...)
    return opset


def _table_entry(spec: TableSpec, low_bit: str) -> dict[str, Any]:
    return {"layout": spec.describe(), "graph": graph_form(spec, low_bit), "bytes_source": spec.stored_bytes(),
            "bytes_export": export_bytes(spec, low_bit)}


def tables_model(specs: list[TableSpec], *, per_sample_weights: bool, low_bit: str, opset: int,
                 result: ExportResult) -> onnx.ModelProto:
    """One ONNX model holding every table's lookup (inputs ``<t>.indices`` / ``.offsets`` / ``.per_sample_weights``,
    output ``<t>``), filling ``result``'s tables, signature and notes."""
    g, inputs, outputs = Graph(), [], []
    for spec in specs:
        names = input_names(spec, per_sample_weights)
        dims = {names[0]: [f"N_{spec.name}"]}
        if spec.bag:
            dims[names[1]] = [f"{'B1' if spec.include_last_offset else 'B'}_{spec.name}"]
        for n in names:
            dtype = TensorProto.FLOAT if n.endswith(".per_sample_weights") else TensorProto.INT64
            shape = dims.get(n, dims[names[0]])
            inputs.append(helper.make_tensor_value_info(n, dtype, shape))
            result.inputs[n] = signature("float32" if dtype == TensorProto.FLOAT else "int64", shape)
        out_shape = [f"B_{spec.name}" if spec.bag else f"N_{spec.name}", spec.embedding_dim]
        outputs.append(helper.make_tensor_value_info(spec.name, TensorProto.FLOAT, out_shape))
        result.outputs[spec.name] = signature("float32", out_shape)
        add_lookup(g, spec, names[0], spec.name, offsets=names[1] if spec.bag else None,
                   per_sample_weights=names[2] if len(names) > 2 else None, low_bit=low_bit)
        result.tables[spec.name] = _table_entry(spec, low_bit)
    result.add_notes(collect_notes(specs, low_bit))
    graph = helper.make_graph(g.nodes, "mlet_compress_lookups", inputs, outputs, initializer=g.initializers)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], producer_name="mlet-compress")


class _Stub(nn.Module):
    """A 2-row table whose rows are a fingerprint, so its Gather can be found in the exported graph."""

    def __init__(self, weight: torch.Tensor) -> None:
        super().__init__()
        self.weight = nn.Parameter(weight, requires_grad=False)

    def forward(self, input: torch.Tensor) -> torch.Tensor:  # noqa: D102
        return F.embedding(input, self.weight)


def _fingerprint(i: int, d: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(0x5EED + i)
    return torch.rand(2, d, generator=gen) * 1000.0 + 7919.0 * (i + 1)


def _torch_onnx(model: nn.Module, src: ModelSource, opset: int) -> onnx.ModelProto:
    try:
        import onnxscript  # noqa: F401  (the dynamo-based exporter needs it)
    except ImportError:
        raise ConfigError("exporting a whole model to ONNX needs onnxscript (pip install 'mlet-compress[export]')") from None
    batch = torch.export.Dim("batch", min=1)
    dyn = tuple({0: batch} if isinstance(x, torch.Tensor) and x.dim() else None for x in src.example_inputs)
    quiet = logging.getLogger("torch.onnx")  # its "torchvision is not installed" lines are not ours to show
    level = quiet.level
    quiet.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            prog = torch.onnx.export(model, src.example_inputs, dynamo=True, input_names=src.input_names,
                                     output_names=src.output_names, dynamic_shapes=dyn, opset_version=opset,
                                     verbose=False, report=False)
    finally:
        quiet.setLevel(level)
    return prog.model_proto


def _substitute(mp: onnx.ModelProto, stubs: dict[bytes, TableSpec], low_bit: str) -> set[str]:
    """Replace each ``Gather`` of a stub by its table's lookup; returns the tables found."""
    found = {i.name: stubs[k] for i in mp.graph.initializer if (k := numpy_helper.to_array(i).tobytes()) in stubs}
    g, nodes = Graph(), []
    for node in mp.graph.node:
        hit = [i for i in node.input if i in found]
        if not hit:
            nodes.append(node)
            continue
        axis = next((a.i for a in node.attribute if a.name == "axis"), 0)
        if node.op_type != "Gather" or node.input[0] not in found or axis != 0 or len(hit) != 1:
            raise ConfigError(f"table {found[hit[0]].name!r}: the ONNX exporter turned its lookup into {node.op_type}, "
                              "which cannot be replaced by the table's lookup graph; export the tables alone")
        start = len(g.nodes)
        add_lookup(g, found[node.input[0]], node.input[1], node.output[0], low_bit=low_bit)
        nodes.extend(g.nodes[start:])
    del mp.graph.node[:]
    mp.graph.node.extend(nodes)
    keep = [i for i in mp.graph.initializer if i.name not in found]
    del mp.graph.initializer[:]
    mp.graph.initializer.extend(keep + g.initializers)
    return {s.name for s in found.values()}


def model_model(src: ModelSource, *, low_bit: str, opset: int, result: ExportResult) -> onnx.ModelProto:
    """The whole model as ONNX with its tables' lookup graphs in place of the exporter's Gathers."""
    specs: dict[str, TableSpec] = {}
    stubs: dict[bytes, TableSpec] = {}

    def make(name: str, table: nn.Module) -> nn.Module:
        spec = table_spec(name, table)
        if spec.bag:
            raise ConfigError(f"table {name!r} is a bag (EmbeddingBag-like); whole-model ONNX export swaps tables called "
                              "like nn.Embedding only; export the tables alone")
        fp = _fingerprint(len(specs), spec.embedding_dim)
        specs[name], stubs[fp.numpy().tobytes()] = spec, spec
        return _Stub(fp)

    swapped, _ = swap_tables(src.model, make)
    if not specs:
        raise ConfigError(f"{type(src.model).__name__} has no embedding table to export")
    mp = _torch_onnx(swapped.eval(), src, opset)
    done = _substitute(mp, stubs, low_bit)
    missing = sorted(set(specs) - done)
    if missing:
        raise ConfigError(f"tables {missing}: their lookups were not found in the exported graph (unused, or folded "
                          "by the exporter); export the tables alone")
    for spec in specs.values():
        result.tables[spec.name] = _table_entry(spec, low_bit)
    result.add_notes(collect_notes(list(specs.values()), low_bit))
    for vi in list(mp.graph.input) + list(mp.graph.output):
        t = vi.type.tensor_type
        dims = [d.dim_param or d.dim_value for d in t.shape.dim]
        dtype = np.dtype(helper.tensor_dtype_to_np_dtype(t.elem_type)).name
        (result.inputs if vi in mp.graph.input else result.outputs)[vi.name] = signature(dtype, dims)
    return mp


def save_model(mp: onnx.ModelProto, dst: Path) -> int:
    """Write ``mp`` atomically (tensors in ``<dst>.data`` when too big for one protobuf); returns bytes written."""
    if mp.ByteSize() < EXTERNAL_DATA_BYTES:
        data = mp.SerializeToString()
        atomic_write_bytes(dst, data)
        return len(data)
    dst.parent.mkdir(parents=True, exist_ok=True)
    location = dst.name + ".data"
    with tempfile.TemporaryDirectory(dir=dst.parent, prefix=f".{dst.name}.") as tmp:
        onnx.save_model(mp, os.path.join(tmp, dst.name), save_as_external_data=True, all_tensors_to_one_file=True,
                        location=location, size_threshold=1024)
        total = 0
        for name in (location, dst.name):  # the data first: the model never points at a missing file
            os.replace(os.path.join(tmp, name), dst.parent / name)
            total += (dst.parent / name).stat().st_size
    return total


def write_onnx(source: Any, dst: Path, *, per_sample_weights: bool, low_bit: str, opset: int) -> ExportResult:
    """Build the ONNX model of a resolved source (tables dict or :class:`ModelSource`), check and save it."""
    check_low_bit(low_bit)
    check_opset(opset)
    what = "model" if isinstance(source, ModelSource) else "tables"
    result = ExportResult(output=dst, format="onnx", what=what)
    if what == "model":
        mp = model_model(source, low_bit=low_bit, opset=opset, result=result)
    else:
        specs = [table_spec(name, mod) for name, mod in source.items()]
        mp = tables_model(specs, per_sample_weights=per_sample_weights, low_bit=low_bit, opset=opset, result=result)
    onnx.checker.check_model(mp)
    result.bytes = save_model(mp, dst)
    return result


__all__ = ["write_onnx", "tables_model", "model_model", "save_model", "check_opset", "EXTERNAL_DATA_BYTES"]
