"""Whole tables: search the scale, quantize and pack, streamed in row chunks; the :class:`QuantizedTensor` container.

Tables may be tensors or ``read_rows(start, stop)`` callables (memory-mapped checkpoints): memory is
O(chunk). The scale is the L2-optimal one among the ``grid`` candidates (:func:`.core.candidate_scales`),
found by the exact fast search of :mod:`.search` (equal to :func:`.core.search_scale_exhaustive`'s choice).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterator, NamedTuple, Optional

import torch
from torch import Tensor

from ...errors import ConfigError
from ..rows import TableLike, as_row_reader, iter_chunks, raise_nonfinite
from .core import cast_scale, check_bits, check_granularity, check_grid, check_scale_dtype, dequantize, quantize, sqnr_db
from .packing import pack_rows, unpack_rows
from .search import search_rows, search_table

DEFAULT_CHUNK_ROWS = 16384


@dataclass
class QuantizedTensor:
    """A quantized n×d table: packed codes, scale(s) and the quality of the approximation.

    Attributes:
        packed: uint8 n×packed_cols(d, bits) (see module docstring for the layout).
        scale: float32 or float16 (the storage dtype), shape [] (``granularity="table"``) or [n] (``"row"``).
        bits: 2..8. granularity: "table" or "row". shape: (n, d).
        error_sq: ‖W − Ŵ‖² (float64 sum) when known. signal_sq: ‖W‖² when known.
    """

    packed: Tensor
    scale: Tensor
    bits: int
    granularity: str
    shape: tuple[int, int]
    error_sq: Optional[float] = None
    signal_sq: Optional[float] = None

    def codes(self, idx: Optional[Tensor] = None) -> Tensor:
        """int8 codes of all rows, or of rows ``idx`` (1-D)."""
        p = self.packed if idx is None else self.packed.index_select(0, idx)
        return unpack_rows(p, self.bits, self.shape[1])

    def dequantize(self) -> Tensor:
        """The dense float32 n×d table Ŵ."""
        return dequantize(self.codes(), self.scale)

    def dequantize_rows(self, idx: Tensor) -> Tensor:
        """Rows ``idx`` (1-D) of Ŵ, bit-identical to ``self.dequantize()[idx]``."""
        s = self.scale if self.scale.dim() == 0 else self.scale.index_select(0, idx)
        return dequantize(self.codes(idx), s)

    @property
    def l2_error(self) -> Optional[float]:
        """‖W − Ŵ‖₂ over the whole table (None when unknown)."""
        return None if self.error_sq is None else math.sqrt(self.error_sq)

    @property
    def sqnr_db(self) -> Optional[float]:
        """10·log10(‖W‖² / ‖W − Ŵ‖²) (inf for an exact table, None when unknown)."""
        if self.error_sq is None or self.signal_sq is None:
            return None
        return sqnr_db(self.signal_sq, self.error_sq)


def search_scale(table: TableLike, *, bits: int = 8, grid: int = 100, granularity: str = "table",
                 num_rows: Optional[int] = None, chunk_rows: int = DEFAULT_CHUNK_ROWS, name: str = "table",
                 scale_dtype: str = "fp32") -> Tensor:
    """L2-optimal scale among the ``grid`` candidates, per table or per row.

    Args:
        table: n×d float tensor or ``read_rows(start, stop)`` callable (then ``num_rows`` is required).
        bits: 2..8. grid: number of candidate thresholds (≥ 1).
        granularity: "table" (one scale, the paper's) or "row" (one per row).
        num_rows: row count for a callable. chunk_rows: rows read per step.
        name: table name for error messages.
        scale_dtype: "fp32" or "fp16": the chosen float32 scale is rounded to it (:func:`.core.cast_scale`).

    Returns:
        scale in ``scale_dtype``, shape [] or [n]; all-zero tables/rows get 1.0.

    Raises:
        ConfigError: bad bits/grid/granularity/scale_dtype, non-float or empty table.
        NumericalError: NaN/Inf in the table (names the first bad row); a scale fp16 cannot hold.

    Example:
        >>> float(search_scale(torch.tensor([[1.0, -0.5]]), bits=2, grid=4))
        0.75
    """
    check_bits(bits), check_grid(grid), check_granularity(granularity), check_scale_dtype(scale_dtype, name)
    read, n = as_row_reader(table, num_rows, name=name)
    if granularity == "table":
        scale = search_table(read, n, bits, grid, chunk_rows, name)
    else:
        scale = search_rows(read, n, bits, grid, chunk_rows, name)
    return cast_scale(scale, scale_dtype, name)


class QuantizedChunk(NamedTuple):
    """Rows ``[start, stop)`` of a quantized table: packed codes and their squared error / signal."""

    start: int
    stop: int
    packed: Tensor
    error_sq: float
    signal_sq: float


def iter_quantized_rows(table: TableLike, scale: Tensor, bits: int, *, num_rows: Optional[int] = None,
                        chunk_rows: int = DEFAULT_CHUNK_ROWS, name: str = "table") -> Iterator[QuantizedChunk]:
    """Quantize and pack a table chunk by chunk (for writing to a file without holding it).

    Args:
        table: n×d tensor or ``read_rows`` callable. scale: float32/float16 [] or [n] (from :func:`search_scale`);
            the codes are computed with exactly these (rounded) values.
        bits: 2..8. num_rows / chunk_rows / name: as in :func:`search_scale`.

    Example:
        >>> [c.packed.shape for c in iter_quantized_rows(torch.ones(3, 2), torch.tensor(1.0), 8, chunk_rows=2)]
        [torch.Size([2, 2]), torch.Size([1, 2])]
    """
    check_bits(bits)
    read, n = as_row_reader(table, num_rows, name=name)
    if scale.dim() not in (0, 1) or (scale.dim() == 1 and scale.shape[0] != n):
        raise ConfigError(f"{name}: scale of shape {tuple(scale.shape)} fits neither one table nor its {n} rows")
    if not bool((scale > 0).all()) or not bool(torch.isfinite(scale).all()):
        raise ConfigError(f"{name}: scales must be finite and positive; recompute them with search_scale")
    for start, stop, rows in iter_chunks(read, n, chunk_rows, name=name):
        s = scale if scale.dim() == 0 else scale[start:stop]
        codes = quantize(rows, s, bits)
        w64 = rows.to(torch.float64)
        if not bool(torch.isfinite(w64).all()):
            raise_nonfinite(rows, start, name)
        err = float(((w64 - dequantize(codes, s).to(torch.float64)) ** 2).sum())
        yield QuantizedChunk(start, stop, pack_rows(codes, bits), err, float((w64 * w64).sum()))


def quantize_tensor(table: TableLike, *, bits: int = 8, grid: int = 100, granularity: str = "table",
                    scale: Optional[Tensor] = None, num_rows: Optional[int] = None,
                    chunk_rows: int = DEFAULT_CHUNK_ROWS, name: str = "table", scale_dtype: str = "fp32") -> QuantizedTensor:
    """Search the scale (unless given), quantize and pack a whole table.

    ``scale_dtype`` ("fp32"/"fp16") is the storage dtype of the scale; a given ``scale`` is cast to it
    (:func:`.core.cast_scale`) and the codes are computed with the cast values.

    Returns:
        :class:`QuantizedTensor` with ``error_sq``/``signal_sq`` filled (``.l2_error``, ``.sqnr_db``).

    Example:
        >>> qt = quantize_tensor(torch.randn(10, 4), bits=8)
        >>> qt.packed.shape, qt.dequantize().shape
        (torch.Size([10, 4]), torch.Size([10, 4]))
    """
    check_bits(bits), check_grid(grid), check_granularity(granularity), check_scale_dtype(scale_dtype, name)
    read, n = as_row_reader(table, num_rows, name=name)
    if scale is None:
        scale = search_scale(read, bits=bits, grid=grid, granularity=granularity, num_rows=n,
                             chunk_rows=chunk_rows, name=name, scale_dtype=scale_dtype)
    elif (scale.dim() == 0) != (granularity == "table"):
        raise ConfigError(f"{name}: a scale of shape {tuple(scale.shape)} does not match granularity={granularity!r}")
    else:
        scale = cast_scale(scale, scale_dtype, name)
    chunks = list(iter_quantized_rows(read, scale, bits, num_rows=n, chunk_rows=chunk_rows, name=name))
    dim = int(read(0, 1).shape[1])
    return QuantizedTensor(packed=torch.cat([c.packed for c in chunks]), scale=scale, bits=bits,
                           granularity=granularity, shape=(n, dim), error_sq=sum(c.error_sq for c in chunks),
                           signal_sq=sum(c.signal_sq for c in chunks))


def quantization_error(table: TableLike, scale: Tensor, bits: int, *, B: Optional[Tensor] = None,
                       num_rows: Optional[int] = None, chunk_rows: int = DEFAULT_CHUNK_ROWS,
                       name: str = "table") -> tuple[float, float]:
    """``(‖W − Ŵ‖², ‖W‖²)`` (float64 sums) of the table a quantized factor represents.

    Without ``B`` the table is the quantized one itself; with ``B`` (r×d) it is ``A @ B`` for the quantized
    n×r factor A, so the error is that of ``(A − Â) @ B``, what lookups of the low-rank table see.

    Example:
        >>> w = torch.tensor([[1.0, 0.3]])
        >>> err, sig = quantization_error(w, torch.tensor(0.5), 8)
        >>> round(err, 6), round(sig, 6)
        (0.04, 1.09)
    """
    if B is None:
        chunks = iter_quantized_rows(table, scale, bits, num_rows=num_rows, chunk_rows=chunk_rows, name=name)
        err = sig = 0.0
        for ch in chunks:
            err, sig = err + ch.error_sq, sig + ch.signal_sq
        return err, sig
    read, n = as_row_reader(table, num_rows, name=name)
    b64 = B.detach().to(torch.float64)
    err = sig = 0.0
    for start, stop, rows in iter_chunks(read, n, chunk_rows, name=name):
        s = scale if scale.dim() == 0 else scale[start:stop]
        a = rows.to(torch.float64)
        deq = dequantize(quantize(rows, s, bits), s).to(torch.float64)
        err += float((((a - deq) @ b64) ** 2).sum())
        sig += float(((a @ b64) ** 2).sum())
    return err, sig


__all__ = ["DEFAULT_CHUNK_ROWS", "QuantizedTensor", "QuantizedChunk", "search_scale", "iter_quantized_rows",
           "quantize_tensor", "quantization_error"]
