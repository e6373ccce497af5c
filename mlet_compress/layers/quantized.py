"""Quantized embedding tables that keep integer storage in memory and dequantize only looked-up rows.

State-dict keys (the checkpoint format): ``qweight`` (uint8, packed code rows, see
:mod:`mlet_compress.ops.quant.packing`), ``scale`` (float32 or float16 — ``scale_dtype`` —, [] per table
or [n] per row) and, optionally, ``B`` (float32 r×d): then the quantized table is the A factor of a
low-rank table and a lookup is ``deq(A[idx]) @ B`` (bags pool the dequantized r-dim rows, then multiply
once). In memory the codes are held once, by default in FBGEMM's fused row layout, and sum/mean bags are
pooled by PyTorch's row-wise kernels (:mod:`._quantized_base`). Lookups of single rows (``QuantizedEmbedding``,
bags of one) equal ``F.embedding`` over :meth:`dequantized_weight` bit for bit; larger bags equal
``F.embedding_bag`` over it up to the kernel's fused accumulation (≲ 2 roundings per pooled row; exactly
in the ``packed`` layout). With ``num_buckets`` indices are hashed (``idx % num_buckets``) first. Built
from float modules by ``from_float`` (grid-searched symmetric scale, :mod:`mlet_compress.ops.quant`),
which also records ``l2_error`` / ``sqnr_db`` of the represented table.
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import ConfigError
from ..ops.bags import bag_offsets
from ..ops.quant import (
    DEFAULT_CHUNK_ROWS, QuantizedTensor, check_bits, check_granularity, check_grid, check_scale_dtype,
    quantization_error, quantize_tensor, scale_dtype_name, sqnr_db,
)
from ..ops.hashing import hash_indices
from ._base import EMBEDDING_BAG_MODES, check_mode, pooled_lookup, refuse_max_norm
from ._quantized_base import _QuantizedBase
from .lowrank import LowRankEmbedding, LowRankEmbeddingBag, _LowRankBase


class _QuantizedTable(_QuantizedBase):
    def load_quantized(self, qt: QuantizedTensor, B: Optional[Tensor] = None) -> "_QuantizedTable":
        """Load a :class:`QuantizedTensor` (and the r×d factor ``B`` of a low-rank table) into the module.

        Raises:
            ConfigError: bits, granularity, shape or scale dtype that do not fit the module.
        """
        fits = (qt.bits, qt.granularity, tuple(qt.shape)) == (self.bits, self.granularity, (self.num_embeddings, self.code_dim))
        if not fits:
            raise ConfigError(f"{type(self).__name__}: quantized table {qt.shape} bits={qt.bits} {qt.granularity!r} does "
                              f"not fit ({self.num_embeddings}, {self.code_dim}) bits={self.bits} {self.granularity!r}")
        return self.load_codes(qt.packed, qt.scale, B)

    @classmethod
    def _build(cls, module: nn.Module, bits: int, grid: int, granularity: str, chunk_rows: int, bag: bool,
               scale_dtype="fp32"):
        where = f"{cls.__name__}.from_float({type(module).__name__})"
        check_bits(bits, where), check_grid(grid), check_granularity(granularity), check_scale_dtype(scale_dtype, where)
        lowrank = isinstance(module, _LowRankBase)
        want = (LowRankEmbeddingBag, nn.EmbeddingBag) if bag else (LowRankEmbedding, nn.Embedding)
        if not isinstance(module, want):
            raise ConfigError(f"{where}: expected one of {[t.__name__ for t in want]}; use the matching Quantized class")
        refuse_max_norm(module, where)
        table = (module.A if lowrank else module.weight).detach()
        qt = quantize_tensor(table, bits=bits, grid=grid, granularity=granularity, chunk_rows=chunk_rows, name=where,
                             scale_dtype=scale_dtype)
        B = module.B.detach().to(torch.float32) if lowrank else None
        opts = dict(bits=bits, granularity=granularity, rank=module.rank if lowrank else None,
                    padding_idx=module.padding_idx, num_buckets=getattr(module, "num_buckets", None),
                    original_num_embeddings=getattr(module, "original_num_embeddings", None), device=table.device,
                    scale_dtype=scale_dtype_name(scale_dtype))
        if bag:
            opts.update(mode=module.mode, include_last_offset=module.include_last_offset)
        new = cls(table.shape[0], module.embedding_dim, **opts).load_quantized(qt, B)
        if B is None:
            new.l2_error, new.sqnr_db = qt.l2_error, qt.sqnr_db
        else:  # error of the represented table A@B, not just of the factor
            err, sig = quantization_error(table, qt.scale, bits, B=B, chunk_rows=chunk_rows, name=where)
            new.l2_error, new.sqnr_db = err**0.5, sqnr_db(sig, err)
        return new


def _single_row_bags(input: Tensor, flat: Tensor, offsets: Tensor, include_last_offset: bool) -> bool:
    """Whether every bag holds exactly one index (then pooling is the identity): a cheap check."""
    if input.dim() == 2:
        return input.shape[1] == 1 and not include_last_offset
    n_bags = offsets.numel() - int(include_last_offset)
    if n_bags != flat.numel() or n_bags == 0:
        return False
    return bool(torch.equal(offsets, torch.arange(offsets.numel(), device=offsets.device, dtype=offsets.dtype)))


class QuantizedEmbedding(_QuantizedTable):
    """``nn.Embedding`` look-alike over packed integer rows (2..8 bits), per-table or per-row scale.

    Args:
        num_embeddings, embedding_dim: shape n×d of the represented table.
        bits: 2..8. granularity: "table" or "row".
        rank: when set, the stored codes are an n×rank factor and ``B`` (rank×d) maps them to d dims.
        padding_idx, num_buckets: as in ``nn.Embedding`` / ``HashedEmbedding``.
        scale_dtype: "fp32" or "fp16", the dtype of the ``scale`` tensor (the checkpoint's).

    The codes are held once in memory, by default in FBGEMM's fused row layout (``layout == "fused"``;
    ``use_fused_kernel(False)`` keeps the packed checkpoint form); ``qweight`` / ``scale`` read them in
    the checkpoint format.

    Example:
        >>> q = QuantizedEmbedding.from_float(nn.Embedding(100, 16), bits=8)
        >>> bool(torch.equal(q(torch.tensor([3])), q.dequantized_weight()[[3]]))
        True
    """

    def forward(self, input: Tensor) -> Tensor:  # noqa: D102
        idx = hash_indices(input, self.num_buckets)
        flat = idx.reshape(-1)
        if self._kernel_ready():  # bags of one row: bit-identical to the pure-torch path
            offsets = torch.arange(flat.numel(), device=flat.device, dtype=flat.dtype)
            rows = self._kernel_pool(flat, offsets, None, False, mean=False)
        else:
            rows = self.dequantize_rows(flat)
        return self._project(rows.reshape(*idx.shape, self.code_dim))

    @classmethod
    def from_float(cls, module: nn.Module, bits: int = 8, grid: int = 100, granularity: str = "table",
                   chunk_rows: int = DEFAULT_CHUNK_ROWS, scale_dtype: str = "fp32") -> "QuantizedEmbedding":
        """Quantize an ``nn.Embedding``/``HashedEmbedding`` (its weight) or a ``LowRankEmbedding`` (its A; its B is kept).

        ``scale_dtype="fp16"`` stores the scales in float16 (codes computed with the rounded scales).

        Raises:
            ConfigError: wrong module type, ``max_norm`` set, bad bits/grid/granularity/scale_dtype.
            NumericalError: NaN/Inf weights; a scale float16 cannot hold (with ``scale_dtype="fp16"``).
        """
        return cls._build(module, bits, grid, granularity, chunk_rows, bag=False, scale_dtype=scale_dtype)


class QuantizedEmbeddingBag(_QuantizedTable):
    """``nn.EmbeddingBag`` look-alike over packed integer rows; only looked-up rows are dequantized.

    Args:
        mode: "sum", "mean" or ("max" only without ``B``). include_last_offset: as in ``nn.EmbeddingBag``.
        Other args as :class:`QuantizedEmbedding`.

    Example:
        >>> q = QuantizedEmbeddingBag.from_float(nn.EmbeddingBag(100, 16, mode="sum"), bits=4)
        >>> q(torch.tensor([1, 2, 3]), torch.tensor([0, 1])).shape
        torch.Size([2, 16])
    """

    def __init__(self, num_embeddings: int, embedding_dim: int, *, mode: str = "mean",
                 include_last_offset: bool = False, **kwargs):
        if kwargs.get("rank") is not None:
            check_mode(mode, type(self).__name__)
        elif mode not in EMBEDDING_BAG_MODES + ("max",):
            raise ConfigError(f"{type(self).__name__}: mode={mode!r}; use 'sum', 'mean' or 'max'")
        super().__init__(num_embeddings, embedding_dim, **kwargs)
        self.mode, self.include_last_offset = mode, bool(include_last_offset)

    def forward(self, input: Tensor, offsets: Optional[Tensor] = None,
                per_sample_weights: Optional[Tensor] = None) -> Tensor:  # noqa: D102
        idx = hash_indices(input, self.num_buckets)
        if per_sample_weights is not None and self.mode != "sum":
            raise NotImplementedError(f"embedding_bag: per_sample_weights was not None. per_sample_weights is only "
                                      f"supported for mode='sum' (got mode='{self.mode}'). Please open a feature request on GitHub.")
        flat, offs = bag_offsets(idx, offsets)
        if self._kernel_ready() and self.mode != "max" and self.padding_idx is None:
            psw = None if per_sample_weights is None else per_sample_weights.reshape(-1).to(torch.float32)
            pooled = self._kernel_pool(flat, offs, psw, self.include_last_offset, mean=self.mode == "mean")
            return self._project(pooled)
        if _single_row_bags(input, flat, offs, self.include_last_offset):
            pooled = self.dequantize_rows(flat)  # a bag of one row pools to that row (sum, mean and max)
            if self.padding_idx is not None:  # ... unless it is the padding row: an empty bag pools to 0
                pooled.masked_fill_((flat == self.padding_idx).unsqueeze(1), 0.0)
            if per_sample_weights is not None:
                pooled.mul_(per_sample_weights.reshape(-1, 1).to(pooled.dtype))
        elif self.padding_idx is None and self.mode != "max":
            # nothing to exclude: dequantize the looked-up rows in order and pool them (no unique/sort)
            rows = self.dequantize_rows(flat)
            if per_sample_weights is not None:
                per_sample_weights = per_sample_weights.reshape(-1).to(rows.dtype)
            pooled = F.embedding_bag(torch.arange(flat.numel(), device=flat.device, dtype=offs.dtype), rows, offs,
                                     mode=self.mode, per_sample_weights=per_sample_weights,
                                     include_last_offset=self.include_last_offset)
        else:
            pooled = pooled_lookup(self.dequantize_rows, idx, offsets, mode=self.mode,
                                   per_sample_weights=per_sample_weights,
                                   include_last_offset=self.include_last_offset, padding_idx=self.padding_idx)
        return self._project(pooled)

    def extra_repr(self) -> str:  # noqa: D102
        return super().extra_repr() + f", mode={self.mode!r}" + (", include_last_offset=True" if self.include_last_offset else "")

    @classmethod
    def from_float(cls, module: nn.Module, bits: int = 8, grid: int = 100, granularity: str = "table",
                   chunk_rows: int = DEFAULT_CHUNK_ROWS, scale_dtype: str = "fp32") -> "QuantizedEmbeddingBag":
        """Quantize an ``nn.EmbeddingBag``/``HashedEmbeddingBag`` or a ``LowRankEmbeddingBag`` (A; B is kept).

        Args and errors as :meth:`QuantizedEmbedding.from_float`.
        """
        return cls._build(module, bits, grid, granularity, chunk_rows, bag=True, scale_dtype=scale_dtype)


def to_quantized(module: nn.Module, bits: int = 8, grid: int = 100, granularity: str = "table",
                 chunk_rows: int = DEFAULT_CHUNK_ROWS, scale_dtype: str = "fp32") -> _QuantizedTable:
    """The quantized twin of an Embedding/EmbeddingBag (plain, hashed or low-rank).

    Example:
        >>> to_quantized(nn.Embedding(10, 4), bits=4).bits
        4
    """
    if isinstance(module, (nn.EmbeddingBag, LowRankEmbeddingBag)):
        return QuantizedEmbeddingBag.from_float(module, bits, grid, granularity, chunk_rows, scale_dtype)
    if isinstance(module, (nn.Embedding, LowRankEmbedding)):
        return QuantizedEmbedding.from_float(module, bits, grid, granularity, chunk_rows, scale_dtype)
    raise ConfigError(f"to_quantized: {type(module).__name__} is not an embedding table (Embedding, EmbeddingBag, LowRank*)")


__all__ = ["QuantizedEmbedding", "QuantizedEmbeddingBag", "to_quantized"]
