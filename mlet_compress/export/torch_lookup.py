"""Export-friendly torch lookups: the ONNX graph of :mod:`.onnx_graph`, op for op, as an ``nn.Module``.

:class:`ExportLookup` holds a table exactly as stored (float rows, or packed integer codes + scale, and the
projection) and looks it up with shape-static ops only (gather, shift/mask unpacking, ``index_add`` /
``scatter_reduce`` over segment ids), so ``torch.export`` captures it with dynamic sizes and no
data-dependent branches. :class:`LookupSet` is several of them behind one ``forward(inputs: dict)`` with
the ONNX input names.

Example:
    >>> import torch
    >>> from torch import nn
    >>> from mlet_compress.export.tables import table_spec
    >>> bag = nn.EmbeddingBag(10, 4, mode="mean")
    >>> lk = ExportLookup(table_spec("emb", bag))
    >>> idx, offs = torch.tensor([1, 2, 3]), torch.tensor([0, 1, 3])
    >>> bool(torch.allclose(lk(idx, offs), bag(idx, offs)))
    True
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor, nn

from .tables import TableSpec


class ExportLookup(nn.Module):
    """One table's lookup in plain torch ops; float32 output.

    ``forward(indices)`` for plain lookups (any shape → ``indices.shape + (d,)``);
    ``forward(indices [N], offsets [bags(+1)], per_sample_weights [N] | None)`` for bags.
    """

    def __init__(self, spec: TableSpec) -> None:
        super().__init__()
        self.bag, self.mode, self.padding_idx = spec.bag, spec.mode, spec.padding_idx
        self.include_last_offset, self.num_buckets = spec.include_last_offset, spec.num_buckets
        self.row_dim, self.embedding_dim = spec.row_dim, spec.embedding_dim
        self.bits, self.granularity, self.cb = spec.bits, spec.granularity, spec.container_bits
        # the spec's tensors as they are (views of the source module's state: no copy of the table)
        self.register_buffer("weight", spec.weight)
        self.register_buffer("codes", spec.codes)
        self.register_buffer("scale", spec.scale)
        self.register_buffer("project", spec.project)
        if self.cb:
            self.register_buffer("shifts", torch.arange(0, 8, self.cb, dtype=torch.uint8))

    def _rows(self, idx: Tensor) -> Tensor:
        if self.codes is None:
            return self.weight.index_select(0, idx).to(torch.float32)
        packed = self.codes.index_select(0, idx)
        if self.cb == 8:
            q = packed.view(torch.int8).to(torch.float32)
        else:
            sign = 1 << (self.cb - 1)
            u = (packed.unsqueeze(-1) >> self.shifts) & ((1 << self.cb) - 1)
            u = u.reshape(packed.shape[0], -1)[:, : self.row_dim]
            q = (u ^ sign).to(torch.float32) - sign
        s = self.scale.to(torch.float32)
        return q * (s.index_select(0, idx).unsqueeze(1) if self.granularity == "row" else s)

    def _pool(self, rows: Tensor, idx: Tensor, offsets: Tensor, weights: Optional[Tensor]) -> Tensor:
        n, k = idx.shape[0], offsets.shape[0]
        n_bags = k - int(self.include_last_offset)
        starts = offsets.clamp(max=n)
        marks = torch.zeros(n + 1, dtype=torch.int64, device=idx.device).index_add(
            0, starts, torch.ones_like(starts))
        seg = marks[:n].cumsum(0) - 1
        extra = torch.full_like(seg, n_bags)
        seg = torch.where(seg < 0, extra, seg)  # before offsets[0]: the extra row
        if self.padding_idx is not None:
            seg = torch.where(idx == self.padding_idx, extra, seg)
        if weights is not None:
            rows = rows * weights.reshape(-1, 1).to(torch.float32)
        count = torch.zeros(n_bags + 1, dtype=torch.float32, device=idx.device).index_add(
            0, seg, torch.ones(n, dtype=torch.float32, device=idx.device))
        if self.mode == "max":
            acc = torch.full((n_bags + 1, rows.shape[1]), float("-inf"), device=rows.device)
            acc = acc.scatter_reduce(0, seg.unsqueeze(1).expand(-1, rows.shape[1]), rows, "amax")
            acc = torch.where(count.unsqueeze(1) > 0, acc, torch.zeros_like(acc))
        else:
            acc = torch.zeros(n_bags + 1, rows.shape[1], dtype=torch.float32, device=rows.device).index_add(0, seg, rows)
            if self.mode == "mean":
                acc = acc / count.clamp(min=1.0).unsqueeze(1)
        return acc[:n_bags]

    def forward(self, indices: Tensor, offsets: Optional[Tensor] = None,
                per_sample_weights: Optional[Tensor] = None) -> Tensor:  # noqa: D102
        flat = indices.reshape(-1)
        if self.num_buckets is not None:
            flat = torch.remainder(flat, self.num_buckets)
        rows = self._rows(flat)
        if self.bag:
            rows = self._pool(rows, flat, offsets, per_sample_weights)
        if self.project is not None:
            rows = rows @ self.project
        return rows if self.bag else rows.reshape(*indices.shape, self.embedding_dim)


def input_names(spec: TableSpec, per_sample_weights: bool) -> list[str]:
    """The exported inputs of a table: ``<name>.indices`` (+ ``.offsets`` and, for sum bags on request,
    ``.per_sample_weights``)."""
    names = [f"{spec.name}.indices"]
    if spec.bag:
        names.append(f"{spec.name}.offsets")
        if per_sample_weights and spec.mode == "sum":
            names.append(f"{spec.name}.per_sample_weights")
    return names


class LookupSet(nn.Module):
    """Several :class:`ExportLookup` s: ``forward(inputs)`` maps ``{"<table>.indices": ..., ...}`` to
    ``{"<table>": rows}`` (the input and output names of the ONNX export)."""

    def __init__(self, specs: list[TableSpec], per_sample_weights: bool = False) -> None:
        super().__init__()
        self.names = [s.name for s in specs]
        self.inputs = {s.name: input_names(s, per_sample_weights) for s in specs}
        self.lookups = nn.ModuleList(ExportLookup(s) for s in specs)

    def forward(self, inputs: dict[str, Tensor]) -> dict[str, Tensor]:  # noqa: D102
        return {name: lk(*(inputs[k] for k in self.inputs[name]))
                for name, lk in zip(self.names, self.lookups)}


__all__ = ["ExportLookup", "LookupSet", "input_names"]
