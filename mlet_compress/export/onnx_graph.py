"""ONNX nodes of one table lookup, built with ``onnx.helper`` (no tracing).

A lookup is, in order (docs/export.md has the picture):

1. ``Mod`` by ``num_buckets`` (hashed tables);
2. ``Gather`` of the stored rows: float rows, or integer codes + ``DequantizeLinear`` (scale per table, or
   per row gathered with the codes; 3/4- and 2-bit codes stay packed in uint8 and the gathered bytes are
   unpacked by ``BitwiseXor``/``BitShift``/``BitwiseAnd``, because ONNX ``Gather`` takes no int4/int2 type);
3. bags: the reduction over offsets — a segment id per index from ``ScatterElements`` + ``CumSum`` over the
   offsets, then ``ScatterND`` (``add``, or ``max``) into one row per bag, ``/ count`` for ``mean``; padding
   indices and indices after the last offset go to one extra row that is sliced off; empty bags are 0;
4. ``MatMul`` by the projection (low-rank ``B``, MLET ``proj.T``), after pooling.

Every node name and intermediate tensor is prefixed with the table name, so several lookups share a graph.
Needs opset ≥ 18 (``BitwiseAnd``, ``ScatterND(reduction="max")``).
"""

from __future__ import annotations

from typing import Optional

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from .tables import TableSpec

MIN_OPSET = 18


class Graph:
    """Nodes and initializers being collected for one ONNX graph (unique names per prefix)."""

    def __init__(self) -> None:
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []
        self._init_names: set[str] = set()
        self._count = 0

    def name(self, prefix: str, what: str) -> str:
        """A fresh tensor/node name ``<prefix>/<what>_<i>``."""
        self._count += 1
        return f"{prefix}/{what}_{self._count}"

    def init(self, prefix: str, what: str, array: np.ndarray) -> str:
        """Add an initializer named ``<prefix>/<what>`` (once: a second lookup of a table reuses it)."""
        n = f"{prefix}/{what}"
        if n not in self._init_names:
            self._init_names.add(n)
            a = np.asarray(array)
            self.initializers.append(numpy_helper.from_array(a if a.flags.c_contiguous else np.ascontiguousarray(a), n))
        return n

    def const(self, prefix: str, array: np.ndarray) -> str:
        """A small constant (int64 shapes, axes, fill values), stored as an initializer."""
        return self.init(prefix, f"const_{self._next()}", np.asarray(array))

    def _next(self) -> int:
        self._count += 1
        return self._count

    def op(self, prefix: str, op_type: str, inputs: list[str], output: Optional[str] = None, **attrs) -> str:
        """Append one node; returns its (single) output name."""
        out = output or self.name(prefix, op_type.lower())
        self.nodes.append(helper.make_node(op_type, inputs, [out], name=self.name(prefix, op_type), **attrs))
        return out


def _fill(value: float, dtype) -> onnx.TensorProto:
    return numpy_helper.from_array(np.array([value], dtype=dtype))


def _float_rows(g: Graph, p: str, spec: TableSpec, idx: str) -> str:
    w = spec.weight.numpy()
    rows = g.op(p, "Gather", [g.init(p, "weight", w), idx], axis=0)
    return rows if w.dtype == np.float32 else g.op(p, "Cast", [rows], to=TensorProto.FLOAT)


def _scale(g: Graph, p: str, spec: TableSpec, idx: str) -> str:
    s = spec.scale.numpy()
    name = g.init(p, "scale", s)
    if spec.granularity == "row":
        name = g.op(p, "Gather", [name, idx], axis=0)
    return name if s.dtype == np.float32 else g.op(p, "Cast", [name], to=TensorProto.FLOAT)


def shift_amounts(cb: int) -> list[int]:
    """Right shifts that bring code ``k`` of a byte to bit 0: ``k * cb`` (little-endian inside a byte)."""
    return list(range(0, 8, cb))


def _unpack_packed(g: Graph, p: str, spec: TableSpec, packed_rows: str) -> str:
    """uint8 packed rows [N, cols] → offset-binary codes ``q + 2^(cb-1)`` as uint8 [N, row_dim].

    One ``BitwiseXor`` flips the sign bit of every code in the byte (two's complement → offset binary), then
    code k is ``(byte >> k·cb) & mask``, one scalar shift per code position (a shift broadcast over all positions
    at once ran far slower in onnxruntime 1.32), interleaved back by ``Concat``.
    """
    cb = spec.container_bits
    per, cols = 8 // cb, int(spec.codes.shape[1])
    signs = sum((1 << (cb - 1)) << (k * cb) for k in range(per))
    u = g.op(p, "BitwiseXor", [packed_rows, g.const(p, np.array(signs, np.uint8))])
    mask, ax = g.const(p, np.array((1 << cb) - 1, np.uint8)), g.const(p, np.array([2], np.int64))
    parts = []
    for shift in shift_amounts(cb):
        part = u if shift == 0 else g.op(p, "BitShift", [u, g.const(p, np.array(shift, np.uint8))], direction="RIGHT")
        if shift + cb < 8:
            part = g.op(p, "BitwiseAnd", [part, mask])
        parts.append(g.op(p, "Unsqueeze", [part, ax]))
    u = g.op(p, "Concat", parts, axis=2)
    u = g.op(p, "Reshape", [u, g.const(p, np.array([-1, cols * per], np.int64))])
    if cols * per != spec.row_dim:
        u = g.op(p, "Slice", [u, g.const(p, np.array([0], np.int64)), g.const(p, np.array([spec.row_dim], np.int64)),
                              g.const(p, np.array([1], np.int64))])
    return u


def _quantized_rows(g: Graph, p: str, spec: TableSpec, idx: str, low_bit: str) -> str:
    """Gather integer codes, then ``DequantizeLinear`` with the per-table or gathered per-row scale."""
    from ..ops.quant import unpack_rows

    packed = spec.container_bits < 8 and low_bit == "packed"
    if packed:
        rows = g.op(p, "Gather", [g.init(p, "codes_packed", spec.codes.numpy()), idx], axis=0)
        codes, zero = _unpack_packed(g, p, spec, rows), np.uint8(1 << (spec.container_bits - 1))
    else:  # 8-bit containers are the int8 codes themselves; lower bit widths unpacked here (low_bit="int8")
        int8 = unpack_rows(spec.codes, spec.bits, spec.row_dim).numpy()
        codes, zero = g.op(p, "Gather", [g.init(p, "codes_int8", int8), idx], axis=0), np.int8(0)
    scale = _scale(g, p, spec, idx)
    # the zero point is always explicit: onnxruntime's QDQ propagation (1.32) re-quantizes a DequantizeLinear
    # without one to uint8 around a following Reshape, which clamps negative codes to 0
    zp = g.const(p, np.array(zero))
    if spec.granularity == "row":  # a per-axis zero point has the scale's shape
        zp = g.op(p, "Expand", [zp, g.op(p, "Shape", [scale])])
    kw = {"axis": 0} if spec.granularity == "row" else {}
    return g.op(p, "DequantizeLinear", [codes, scale, zp], **kw)


def _segments(g: Graph, p: str, spec: TableSpec, idx: str, offsets: str) -> tuple[str, str]:
    """``(seg [N], rows_out [1])``: the bag of each index and the pooled buffer's row count (bags + 1)."""
    i64 = lambda v: g.const(p, np.array(v, np.int64))  # noqa: E731
    n = g.op(p, "Shape", [idx])
    k = g.op(p, "Shape", [offsets])
    n_bags = g.op(p, "Sub", [k, i64([1 if spec.include_last_offset else 0])])
    starts = g.op(p, "Min", [offsets, g.op(p, "Reshape", [n, i64([])])])  # an offset of N starts no row
    marks = g.op(p, "ConstantOfShape", [g.op(p, "Add", [n, i64([1])])], value=_fill(0, np.int64))
    ones = g.op(p, "ConstantOfShape", [k], value=_fill(1, np.int64))
    marks = g.op(p, "ScatterElements", [marks, starts, ones], axis=0, reduction="add")
    marks = g.op(p, "Slice", [marks, i64([0]), n, i64([0])])
    seg = g.op(p, "Sub", [g.op(p, "CumSum", [marks, i64(0)]), i64(1)])  # -1 before offsets[0]: the extra row
    if spec.padding_idx is not None:  # padding indices pool into the extra row (excluded, also from the mean)
        seg = g.op(p, "Where", [g.op(p, "Equal", [idx, i64(spec.padding_idx)]), n_bags, seg])
    return seg, n_bags


def _pool(g: Graph, p: str, spec: TableSpec, rows: str, idx: str, offsets: str, weights: Optional[str]) -> str:
    """EmbeddingBag pooling of ``rows`` [N, c] over ``offsets`` → [bags, c]."""
    i64 = lambda v: g.const(p, np.array(v, np.int64))  # noqa: E731
    seg, n_bags = _segments(g, p, spec, idx, offsets)
    if weights is not None:
        rows = g.op(p, "Mul", [rows, g.op(p, "Unsqueeze", [weights, i64([1])])])
    n_out = g.op(p, "Add", [n_bags, i64([1])])
    shape = g.op(p, "Concat", [n_out, i64([spec.row_dim])], axis=0)
    seg2 = g.op(p, "Unsqueeze", [seg, i64([1])])
    if spec.mode == "max":
        lowest = float(np.finfo(np.float32).min)
        acc = g.op(p, "ConstantOfShape", [shape], value=_fill(lowest, np.float32))
        acc = g.op(p, "ScatterND", [acc, seg2, rows], reduction="max")
    else:
        acc = g.op(p, "ConstantOfShape", [shape], value=_fill(0.0, np.float32))
        acc = g.op(p, "ScatterND", [acc, seg2, rows], reduction="add")
    if spec.mode in ("mean", "max"):
        count = g.op(p, "ConstantOfShape", [n_out], value=_fill(0.0, np.float32))
        ones = g.op(p, "ConstantOfShape", [g.op(p, "Shape", [idx])], value=_fill(1.0, np.float32))
        count = g.op(p, "Unsqueeze", [g.op(p, "ScatterElements", [count, seg, ones], axis=0, reduction="add"),
                                      i64([1])])
        if spec.mode == "mean":
            acc = g.op(p, "Div", [acc, g.op(p, "Max", [count, g.const(p, np.array(1.0, np.float32))])])
        else:  # an empty bag pools to 0, as in torch
            nonempty = g.op(p, "Greater", [count, g.const(p, np.array(0.0, np.float32))])
            acc = g.op(p, "Where", [nonempty, acc, g.const(p, np.array(0.0, np.float32))])
    return g.op(p, "Slice", [acc, i64([0]), n_bags, i64([0])])


def add_lookup(g: Graph, spec: TableSpec, indices: str, output: str, *, offsets: Optional[str] = None,
               per_sample_weights: Optional[str] = None, low_bit: str = "packed") -> None:
    """Append the nodes of ``spec``'s lookup: ``indices`` (+ ``offsets`` for bags) → ``output`` (float32).

    Args:
        g: the graph being built.
        spec: the table.
        indices: int64 tensor name: ``[N]`` for bags, any shape for plain lookups (output ``[..., d]``).
        output: name of the float32 result tensor (``[bags, d]`` or ``indices.shape + [d]``).
        offsets: int64 ``[bags]`` bag starts (``[bags + 1]`` with ``include_last_offset``); bags only.
        per_sample_weights: float32 ``[N]`` weights (``sum`` bags only), or None.
        low_bit: ``"packed"`` (3/4/2-bit codes stay packed, unpacked after the gather) or ``"int8"``
            (unpacked to int8 rows at export: 2×/4× the bytes).
    """
    p = spec.name
    flat = g.op(p, "Reshape", [indices, g.const(p, np.array([-1], np.int64))])
    if spec.num_buckets is not None:
        flat = g.op(p, "Mod", [flat, g.const(p, np.array(spec.num_buckets, np.int64))])
    rows = _float_rows(g, p, spec, flat) if spec.codes is None else _quantized_rows(g, p, spec, flat, low_bit)
    if spec.bag:
        rows = _pool(g, p, spec, rows, flat, offsets, per_sample_weights)
    if spec.project is not None:
        rows = g.op(p, "MatMul", [rows, g.init(p, "project", spec.project.numpy())])
    if spec.bag:
        g.op(p, "Identity", [rows], output=output)
        return
    shape = g.op(p, "Concat", [g.op(p, "Shape", [indices]), g.const(p, np.array([spec.embedding_dim], np.int64))], axis=0)
    g.op(p, "Reshape", [rows, shape], output=output)


__all__ = ["Graph", "add_lookup", "MIN_OPSET"]
