"""Storage of the quantized tables: one in-memory copy of the codes, the checkpoint format at the state-dict boundary.

The state dict (the checkpoint format) holds ``qweight`` (uint8 packed two's-complement codes,
:mod:`mlet_compress.ops.quant.packing`), ``scale`` (float32 or float16, [] per table or [n] per row) and,
for a quantized low-rank factor, ``B``. In memory the codes live in one of two layouts:

* ``"fused"`` (the default wherever this torch build has FBGEMM's row-wise kernel for the bit width):
  FBGEMM's fused rows (:mod:`mlet_compress.ops.quant.fused`) — the codes in offset binary plus a scale/bias
  header per row (8 bytes at 5–8 bits, 4 bytes at 2–4 bits) — pooled by PyTorch's kernels;
* ``"packed"``: exactly the state-dict tensors, pooled by the pure-torch path (dequantize the looked-up
  rows, then ``F.embedding_bag``); used where the kernels are missing, or chosen with
  ``use_fused_kernel(False)`` to save the header bytes.

``qweight`` and ``scale`` are read-only views of either layout (a fresh tensor in the fused layout);
:meth:`load_quantized`, :meth:`load_codes` and ``load_state_dict`` replace them.
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor, nn

from ..errors import ConfigError
from ..ops.quant import (
    check_bits, check_granularity, check_scale_dtype, dequantize, packed_cols, scale_dtype_name, unpack_rows,
)
from ..ops.quant.fused import (
    fused_available, fused_codes, fused_cols, fused_embedding_bag, from_fused_rows, header_scales, to_fused_rows,
)
from ._base import normalize_padding_idx

LAYOUTS = ("fused", "packed")


class _QuantizedBase(nn.Module):
    def __init__(self, num_embeddings: int, embedding_dim: int, *, bits: int = 8, granularity: str = "table",
                 rank: Optional[int] = None, padding_idx: Optional[int] = None, num_buckets: Optional[int] = None,
                 original_num_embeddings: Optional[int] = None, scale_dtype="fp32", device=None):
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
        self.scale_dtype = check_scale_dtype(scale_dtype, name)
        self.rank = rank
        self.code_dim = rank if rank is not None else embedding_dim
        self.padding_idx = normalize_padding_idx(padding_idx, num_embeddings, name)
        self.num_buckets = num_buckets
        self.original_num_embeddings = original_num_embeddings or num_embeddings
        self.l2_error: Optional[float] = None  # of the represented n×d table, set by from_float
        self.sqnr_db: Optional[float] = None
        B = None if rank is None else torch.zeros(rank, embedding_dim, dtype=torch.float32, device=device)
        self.register_buffer("B", B)  # the r×d factor of a quantized low-rank table (its key stays <name>.B)
        # the codes in the current layout, and the scale when the rows do not carry it (never saved as such:
        # the state dict holds qweight/scale, see _save_to_state_dict)
        self.register_buffer("_codes", None, persistent=False)
        self.register_buffer("_scale", None, persistent=False)
        self.layout = "fused" if fused_available(bits) else "packed"
        self._scale_outside = True  # the kernel pools unscaled codes; the lookup applies _scale
        shape = () if granularity == "table" else (num_embeddings,)
        self._store(torch.zeros(num_embeddings, packed_cols(self.code_dim, bits), dtype=torch.uint8, device=device),
                    torch.ones(shape, dtype=self.scale_dtype, device=device))

    # ------------------------------------------------------------------ storage
    def _store(self, packed: Tensor, scale: Tensor) -> None:
        """Replace the codes and scales (checkpoint form) and rebuild the in-memory layout from them."""
        where = type(self).__name__
        want = (self.num_embeddings, packed_cols(self.code_dim, self.bits))
        if packed.dtype != torch.uint8 or tuple(packed.shape) != want:
            raise ConfigError(f"{where}: packed codes must be uint8 {list(want)}, got {packed.dtype} {list(packed.shape)}")
        shape = () if self.granularity == "table" else (self.num_embeddings,)
        if tuple(scale.shape) != shape or scale.dtype != self.scale_dtype:
            raise ConfigError(f"{where}: scale must be {scale_dtype_name(self.scale_dtype)} {list(shape)} "
                              f"({self.granularity}), got {scale.dtype} {list(scale.shape)}; build the module with "
                              f"scale_dtype={scale_dtype_name(scale.dtype)!r} for {scale.dtype} scales")
        self.__dict__.pop("_weights_cache", None)
        device = self._codes.device if self._codes is not None else packed.device
        packed, scale = packed.detach().to(device), scale.detach().to(device)
        if self.layout == "packed":
            self._codes, self._scale, self._scale_outside = packed.clone(), scale.clone(), True
            return
        fused_shape = (self.num_embeddings, fused_cols(self.code_dim, self.bits))
        reuse = self._codes if self._codes is not None and tuple(self._codes.shape) == fused_shape else None
        rows, in_header = to_fused_rows(packed, scale, self.bits, out=reuse)
        self._codes, self._scale_outside = rows, not in_header
        # per-table scales stay at hand (tiny); per-row scales only when the rows do not carry them
        self._scale = scale.clone() if (self.granularity == "table" or not in_header) else None

    @property
    def qweight(self) -> Tensor:
        """Packed two's-complement codes, uint8 n×packed_cols (the checkpoint form; read-only)."""
        if self.layout == "packed":
            return self._codes
        return from_fused_rows(self._codes, self.bits, self.code_dim)

    @property
    def scale(self) -> Tensor:
        """The scales in their storage dtype: [] per table, [n] per row (read-only)."""
        if self._scale is not None:
            return self._scale
        return header_scales(self._codes, self.bits).to(self.scale_dtype)

    def load_codes(self, packed: Tensor, scale: Tensor, B: Optional[Tensor] = None) -> "_QuantizedBase":
        """Load packed codes, scales (in the module's ``scale_dtype``) and, for a low-rank factor, ``B``.

        Raises:
            ConfigError: a shape or dtype that does not fit the module.
        """
        where = type(self).__name__
        if (B is None) != (self.B is None):
            raise ConfigError(f"{where}: B must be given exactly when the module was built with rank=")
        if B is not None and tuple(B.shape) != tuple(self.B.shape):
            raise ConfigError(f"{where}: B has shape {tuple(B.shape)}, expected {tuple(self.B.shape)}")
        with torch.no_grad():
            self._store(packed, scale)
            if B is not None:
                self.B.copy_(B)
        return self

    def use_fused_kernel(self, enable: bool = True) -> "_QuantizedBase":
        """Choose the in-memory layout: FBGEMM's fused rows (``True``, the default) or the packed form (``False``).

        The fused layout is the only in-memory copy of the codes (no second copy is kept): it adds a
        scale/bias header per row (8 bytes at 5–8 bits, 4 at 2–4 bits; see ``docs/perf.md``) and lets
        PyTorch's row-wise kernels pool sum/mean bags. ``False`` keeps exactly the checkpoint tensors and
        pools with the pure-torch path (also used for ``max`` bags, ``padding_idx`` and non-CPU tensors).
        Lookups of single rows are bit-identical in both layouts; larger bags differ by the kernel's fused
        accumulation (≲ 2 roundings per pooled row). (It used to opt into an extra FBGEMM copy of the codes;
        the fused rows are now the default and only copy.)

        Raises:
            ConfigError: ``enable`` on a torch build without the kernel for this bit width.

        Example:
            >>> from mlet_compress.layers.quantized import QuantizedEmbeddingBag
            >>> q = QuantizedEmbeddingBag.from_float(nn.EmbeddingBag(10, 4, mode="sum"))
            >>> q.use_fused_kernel(False).layout
            'packed'
        """
        if enable and not fused_available(self.bits):
            raise ConfigError(f"{type(self).__name__}: this torch build has no FBGEMM row-wise embedding-bag kernel "
                              f"for {self.bits}-bit codes; keep the packed layout")
        layout = "fused" if enable else "packed"
        if layout != self.layout:
            packed, scale = self.qweight.clone(), self.scale.clone()
            self.layout, self._codes = layout, None
            self._store(packed, scale)
        return self

    # ------------------------------------------------------------------ state dict = checkpoint format
    def _save_to_state_dict(self, destination, prefix, keep_vars):  # noqa: D102
        destination[prefix + "qweight"] = self.qweight if keep_vars else self.qweight.detach()
        destination[prefix + "scale"] = self.scale if keep_vars else self.scale.detach()
        super()._save_to_state_dict(destination, prefix, keep_vars)

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                              error_msgs):  # noqa: D102
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                                      error_msgs)
        keys = [prefix + "qweight", prefix + "scale"]
        for k in keys:
            if k in unexpected_keys:
                unexpected_keys.remove(k)
        missing = [k for k in keys if k not in state_dict]
        if missing:
            missing_keys.extend(missing)
            return
        try:
            with torch.no_grad():
                self._store(state_dict[keys[0]], state_dict[keys[1]])
        except ConfigError as exc:
            error_msgs.append(f"while loading {prefix!r}: {exc}")

    # ------------------------------------------------------------------ lookups
    def _kernel_ready(self) -> bool:
        # hot path: plain dict reads (nn.Module.__getattr__ costs ~0.5 µs per buffer)
        return self.layout == "fused" and self._buffers["_codes"].is_cpu  # FBGEMM kernels are CPU-only

    def _kernel_pool(self, flat: Tensor, offsets: Tensor, per_sample_weights: Optional[Tensor],
                     include_last_offset: bool, mean: bool) -> Tensor:
        """Sum (or mean) bags of stored rows with the fused kernel, scales applied; float32 bags × code_dim."""
        w = per_sample_weights
        if self._scale_outside:  # 4/2-bit rows with fp32 scales: unit headers, the scale goes in as weights
            scale = self._buffers["_scale"]
            if self.granularity == "row":
                s = scale.index_select(0, flat).to(torch.float32)
            else:
                s = self._table_weights(flat.numel())
            w = s if w is None else (s * w if self.granularity == "table" else s.mul_(w))
        out = fused_embedding_bag(self._buffers["_codes"], self.bits, self.code_dim, flat, offsets, w,
                                  include_last_offset)
        if mean:
            ends = offsets[1:] if include_last_offset else torch.cat([offsets[1:], offsets.new_tensor([flat.numel()])])
            out = out.div_((ends - offsets[: ends.numel()]).clamp_min(1).to(out.dtype).unsqueeze(1))
        return out

    def _table_weights(self, n: int) -> Tensor:
        """``n`` copies of the per-table scale as per-sample weights (a cached buffer, sliced)."""
        cache = self.__dict__.get("_weights_cache")
        scale = self._buffers["_scale"]
        if cache is None or cache.numel() < n or cache.device != scale.device:
            cache = scale.to(torch.float32).expand(max(n, 1024)).clone()
            self.__dict__["_weights_cache"] = cache
        return cache[:n]

    def dequantize_rows(self, idx: Tensor) -> Tensor:
        """Dequantized stored rows ``idx`` (1-D, already hashed): float32 len×code_dim."""
        return self._dequantize(self._codes.index_select(0, idx), idx)

    def dequantized_weight(self) -> Tensor:
        """The dense float32 n×d table the lookups equal (``deq(A) @ B`` for a low-rank factor)."""
        w = self._dequantize(self._codes, None)
        return w if self.B is None else w @ self.B

    def _dequantize(self, rows: Tensor, idx: Optional[Tensor]) -> Tensor:
        if self.layout == "packed":
            codes = unpack_rows(rows, self.bits, self.code_dim)
        else:
            codes = fused_codes(rows, self.bits, self.code_dim)
        if self._scale is None:  # per-row scales in the fused headers
            scale = header_scales(rows, self.bits)
        elif self._scale.dim() == 0 or idx is None:
            scale = self._scale
        else:
            scale = self._scale.index_select(0, idx)
        return dequantize(codes, scale)

    def _project(self, rows: Tensor) -> Tensor:
        B = self._buffers["B"]
        return rows if B is None else rows @ B

    def extra_repr(self) -> str:  # noqa: D102
        s = f"{self.num_embeddings}, {self.embedding_dim}, bits={self.bits}, granularity={self.granularity!r}"
        if self.scale_dtype != torch.float32:
            s += f", scale_dtype={scale_dtype_name(self.scale_dtype)!r}"
        if self.rank is not None:
            s += f", rank={self.rank}"
        if self.padding_idx is not None:
            s += f", padding_idx={self.padding_idx}"
        if self.num_buckets is not None:
            s += f", num_buckets={self.num_buckets}, hashed_from={self.original_num_embeddings}"
        return s


__all__ = ["LAYOUTS"]
