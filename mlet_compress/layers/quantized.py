"""Quantized embedding tables that keep integer storage in memory and dequantize only looked-up rows.

Buffers (state-dict keys): ``qweight`` (uint8, packed code rows, see :mod:`mlet_compress.ops.quant.packing`),
``scale`` (float32, [] per table or [n] per row) and, optionally, ``B`` (float32 r×d): then the
quantized table is the A factor of a low-rank table and a lookup is ``deq(A[idx]) @ B`` (bags pool the
dequantized r-dim rows, then multiply once). Without ``B`` a lookup equals ``F.embedding`` /
``F.embedding_bag`` over :meth:`dequantized_weight` bit for bit. With ``num_buckets`` indices are hashed
(``idx % num_buckets``) first. Built from float modules by ``from_float`` (grid-searched symmetric scale,
:mod:`mlet_compress.ops.quant`), which also records ``l2_error`` / ``sqnr_db`` of the represented table.
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import ConfigError
from ..ops.fbgemm_ref import fbgemm_available, fbgemm_embedding_bag, pack_symmetric_rowwise
from ..ops.bags import bag_offsets
from ..ops.quant import (
    DEFAULT_CHUNK_ROWS, QuantizedTensor, check_bits, check_granularity, check_grid, dequantize, packed_cols,
    quantization_error, quantize_tensor, sqnr_db, unpack_rows,
)
from ..ops.hashing import hash_indices
from ._base import EMBEDDING_BAG_MODES, check_mode, normalize_padding_idx, pooled_lookup, refuse_max_norm
from .lowrank import LowRankEmbedding, LowRankEmbeddingBag, _LowRankBase


class _QuantizedBase(nn.Module):
    def __init__(self, num_embeddings: int, embedding_dim: int, *, bits: int = 8, granularity: str = "table",
                 rank: Optional[int] = None, padding_idx: Optional[int] = None, num_buckets: Optional[int] = None,
                 original_num_embeddings: Optional[int] = None, device=None):
        super().__init__()
        name = type(self).__name__
        for what, v in (("num_embeddings", num_embeddings), ("embedding_dim", embedding_dim)):
            if isinstance(v, bool) or not isinstance(v, int) or v <= 0:
                raise ConfigError(f"{name}: {what}={v!r} must be a positive integer")
        if rank is not None and (isinstance(rank, bool) or not isinstance(rank, int) or rank <= 0):
            raise ConfigError(f"{name}: rank={rank!r} must be a positive integer (columns of the quantized factor)")
        if num_buckets is not None and num_buckets != num_embeddings:
            raise ConfigError(f"{name}: num_buckets={num_buckets} must equal the stored row count {num_embeddings}")
        self.num_embeddings, self.embedding_dim = num_embeddings, embedding_dim
        self.bits, self.granularity = check_bits(bits, name), check_granularity(granularity)
        self.rank = rank
        self.code_dim = rank if rank is not None else embedding_dim
        self.padding_idx = normalize_padding_idx(padding_idx, num_embeddings, name)
        self.num_buckets = num_buckets
        self.original_num_embeddings = original_num_embeddings or num_embeddings
        self.l2_error: Optional[float] = None  # of the represented n×d table, set by from_float
        self.sqnr_db: Optional[float] = None
        self.register_buffer("qweight", torch.zeros(num_embeddings, packed_cols(self.code_dim, bits),
                                                    dtype=torch.uint8, device=device))
        shape = () if granularity == "table" else (num_embeddings,)
        self.register_buffer("scale", torch.ones(shape, dtype=torch.float32, device=device))
        B = None if rank is None else torch.zeros(rank, embedding_dim, dtype=torch.float32, device=device)
        self.register_buffer("B", B)  # the r×d factor of a quantized low-rank table (its key stays <name>.B)
        # optional FBGEMM-layout copy of the codes (see use_fused_kernel); never saved
        self.register_buffer("_fused", None, persistent=False)
        self.register_load_state_dict_post_hook(_refresh_after_load)

    # ------------------------------------------------------------------ fused kernel
    def use_fused_kernel(self, enable: bool = True) -> "_QuantizedBase":
        """Look up 8-bit-container tables (bits 5..8) with PyTorch's fused FBGEMM row-wise kernel.

        Keeps an extra ``n × (code_dim + 8)``-byte copy of the codes with per-row scale/bias (FBGEMM's
        layout, :func:`~mlet_compress.ops.fbgemm_ref.pack_symmetric_rowwise`); it is rebuilt by
        ``load_state_dict``/``load_quantized`` and never saved. Single-row lookups (``QuantizedEmbedding``,
        bags of one) stay bit-identical to the default path; larger sum bags differ by FBGEMM's fused
        accumulation (~1 ulp per pooled row). Used for ``mode="sum"`` bags without ``padding_idx``; other
        calls take the default path.

        Raises:
            ConfigError: bits ≤ 4, or a torch build without the FBGEMM quantized kernels.

        Example:
            >>> bag = nn.EmbeddingBag(10, 4, mode="sum")
            >>> q = QuantizedEmbeddingBag.from_float(bag).use_fused_kernel()  # doctest: +SKIP
        """
        if not enable:
            self._fused = None
            return self
        if self.bits <= 4:
            raise ConfigError(f"{type(self).__name__}: the fused kernel needs 8-bit containers (bits 5..8), "
                              f"got bits={self.bits}; keep the default lookup path")
        if not fbgemm_available():
            raise ConfigError(f"{type(self).__name__}: this torch build has no FBGEMM quantized embedding-bag kernels; "
                              "keep the default lookup path")
        self._fused = pack_symmetric_rowwise(self.qweight, self.scale)
        return self

    def _refresh_fused(self) -> None:
        if self._fused is not None:
            self._fused = pack_symmetric_rowwise(self.qweight, self.scale)

    def _fused_ready(self) -> bool:
        return self._fused is not None and self._fused.device.type == "cpu"  # FBGEMM kernels are CPU-only

    # ------------------------------------------------------------------ lookups
    def dequantize_rows(self, idx: Tensor) -> Tensor:
        """Dequantized stored rows ``idx`` (1-D, already hashed): float32 len×code_dim."""
        codes = unpack_rows(self.qweight.index_select(0, idx), self.bits, self.code_dim)
        scale = self.scale if self.scale.dim() == 0 else self.scale.index_select(0, idx)
        return dequantize(codes, scale)

    def dequantized_weight(self) -> Tensor:
        """The dense float32 n×d table the lookups equal (``deq(A) @ B`` for a low-rank factor)."""
        w = dequantize(unpack_rows(self.qweight, self.bits, self.code_dim), self.scale)
        return w if self.B is None else w @ self.B

    def _project(self, rows: Tensor) -> Tensor:
        return rows if self.B is None else rows @ self.B

    def extra_repr(self) -> str:  # noqa: D102
        s = f"{self.num_embeddings}, {self.embedding_dim}, bits={self.bits}, granularity={self.granularity!r}"
        if self.rank is not None:
            s += f", rank={self.rank}"
        if self.padding_idx is not None:
            s += f", padding_idx={self.padding_idx}"
        if self.num_buckets is not None:
            s += f", num_buckets={self.num_buckets}, hashed_from={self.original_num_embeddings}"
        return s

    # ------------------------------------------------------------------ construction
    def load_quantized(self, qt: QuantizedTensor, B: Optional[Tensor] = None) -> "_QuantizedBase":
        """Copy a :class:`QuantizedTensor` (and the r×d factor ``B`` of a low-rank table) into the buffers."""
        where = type(self).__name__
        fits = (qt.bits, qt.granularity, tuple(qt.shape)) == (self.bits, self.granularity, (self.num_embeddings, self.code_dim))
        if not fits:
            raise ConfigError(f"{where}: quantized table {qt.shape} bits={qt.bits} {qt.granularity!r} does not fit "
                              f"({self.num_embeddings}, {self.code_dim}) bits={self.bits} {self.granularity!r}")
        if (B is None) != (self.B is None):
            raise ConfigError(f"{where}: B must be given exactly when the module was built with rank=")
        with torch.no_grad():
            self.qweight.copy_(qt.packed)
            self.scale.copy_(qt.scale)
            if B is not None:
                if tuple(B.shape) != tuple(self.B.shape):
                    raise ConfigError(f"{where}: B has shape {tuple(B.shape)}, expected {tuple(self.B.shape)}")
                self.B.copy_(B)
        self._refresh_fused()
        return self

    @classmethod
    def _build(cls, module: nn.Module, bits: int, grid: int, granularity: str, chunk_rows: int, bag: bool):
        where = f"{cls.__name__}.from_float({type(module).__name__})"
        check_bits(bits, where), check_grid(grid), check_granularity(granularity)
        lowrank = isinstance(module, _LowRankBase)
        want = (LowRankEmbeddingBag, nn.EmbeddingBag) if bag else (LowRankEmbedding, nn.Embedding)
        if not isinstance(module, want):
            raise ConfigError(f"{where}: expected one of {[t.__name__ for t in want]}; use the matching Quantized class")
        refuse_max_norm(module, where)
        table = (module.A if lowrank else module.weight).detach()
        qt = quantize_tensor(table, bits=bits, grid=grid, granularity=granularity, chunk_rows=chunk_rows, name=where)
        B = module.B.detach().to(torch.float32) if lowrank else None
        opts = dict(bits=bits, granularity=granularity, rank=module.rank if lowrank else None,
                    padding_idx=module.padding_idx, num_buckets=getattr(module, "num_buckets", None),
                    original_num_embeddings=getattr(module, "original_num_embeddings", None), device=table.device)
        if bag:
            opts.update(mode=module.mode, include_last_offset=module.include_last_offset)
        new = cls(table.shape[0], module.embedding_dim, **opts).load_quantized(qt, B)
        if B is None:
            new.l2_error, new.sqnr_db = qt.l2_error, qt.sqnr_db
        else:  # error of the represented table A@B, not just of the factor
            err, sig = quantization_error(table, qt.scale, bits, B=B, chunk_rows=chunk_rows, name=where)
            new.l2_error, new.sqnr_db = err**0.5, sqnr_db(sig, err)
        return new


def _refresh_after_load(module: "_QuantizedBase", _incompatible_keys) -> None:
    """load_state_dict post-hook: rebuild the fused-kernel copy from the freshly loaded buffers."""
    module._refresh_fused()


def _single_row_bags(input: Tensor, flat: Tensor, offsets: Tensor, include_last_offset: bool) -> bool:
    """Whether every bag holds exactly one index (then pooling is the identity): a cheap check."""
    if input.dim() == 2:
        return input.shape[1] == 1 and not include_last_offset
    n_bags = offsets.numel() - int(include_last_offset)
    if n_bags != flat.numel() or n_bags == 0:
        return False
    return bool(torch.equal(offsets, torch.arange(offsets.numel(), device=offsets.device, dtype=offsets.dtype)))


class QuantizedEmbedding(_QuantizedBase):
    """``nn.Embedding`` look-alike over packed integer rows (2..8 bits), per-table or per-row scale.

    Args:
        num_embeddings, embedding_dim: shape n×d of the represented table.
        bits: 2..8. granularity: "table" or "row".
        rank: when set, the stored codes are an n×rank factor and ``B`` (rank×d) maps them to d dims.
        padding_idx, num_buckets: as in ``nn.Embedding`` / ``HashedEmbedding``.

    Example:
        >>> q = QuantizedEmbedding.from_float(nn.Embedding(100, 16), bits=8)
        >>> bool(torch.equal(q(torch.tensor([3])), q.dequantized_weight()[[3]]))
        True
    """

    def forward(self, input: Tensor) -> Tensor:  # noqa: D102
        idx = hash_indices(input, self.num_buckets)
        flat = idx.reshape(-1)
        if self._fused_ready():  # bags of one row: bit-identical to the default path
            offsets = torch.arange(flat.numel(), device=flat.device, dtype=flat.dtype)
            rows = fbgemm_embedding_bag(self._fused, flat, offsets)
        else:
            rows = self.dequantize_rows(flat)
        return self._project(rows.reshape(*idx.shape, self.code_dim))

    @classmethod
    def from_float(cls, module: nn.Module, bits: int = 8, grid: int = 100, granularity: str = "table",
                   chunk_rows: int = DEFAULT_CHUNK_ROWS) -> "QuantizedEmbedding":
        """Quantize an ``nn.Embedding``/``HashedEmbedding`` (its weight) or a ``LowRankEmbedding`` (its A; its B is kept).

        Raises:
            ConfigError: wrong module type, ``max_norm`` set, bad bits/grid/granularity.
            NumericalError: NaN/Inf weights.
        """
        return cls._build(module, bits, grid, granularity, chunk_rows, bag=False)


class QuantizedEmbeddingBag(_QuantizedBase):
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
        if self._fused_ready() and self.mode == "sum" and self.padding_idx is None:
            pooled = fbgemm_embedding_bag(self._fused, idx, offsets, per_sample_weights=per_sample_weights,
                                          include_last_offset=self.include_last_offset)
            return self._project(pooled)
        flat, offs = bag_offsets(idx, offsets)
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
                   chunk_rows: int = DEFAULT_CHUNK_ROWS) -> "QuantizedEmbeddingBag":
        """Quantize an ``nn.EmbeddingBag``/``HashedEmbeddingBag`` or a ``LowRankEmbeddingBag`` (A; B is kept)."""
        return cls._build(module, bits, grid, granularity, chunk_rows, bag=True)


def to_quantized(module: nn.Module, bits: int = 8, grid: int = 100, granularity: str = "table",
                 chunk_rows: int = DEFAULT_CHUNK_ROWS) -> _QuantizedBase:
    """The quantized twin of an Embedding/EmbeddingBag (plain, hashed or low-rank).

    Example:
        >>> to_quantized(nn.Embedding(10, 4), bits=4).bits
        4
    """
    if isinstance(module, (nn.EmbeddingBag, LowRankEmbeddingBag)):
        return QuantizedEmbeddingBag.from_float(module, bits, grid, granularity, chunk_rows)
    if isinstance(module, (nn.Embedding, LowRankEmbedding)):
        return QuantizedEmbedding.from_float(module, bits, grid, granularity, chunk_rows)
    raise ConfigError(f"to_quantized: {type(module).__name__} is not an embedding table (Embedding, EmbeddingBag, LowRank*)")


__all__ = ["QuantizedEmbedding", "QuantizedEmbeddingBag", "to_quantized"]
