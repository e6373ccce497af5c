"""PyTorch's fused FBGEMM 8-bit row-wise embedding-bag kernel, as a reference for speed and error.

FBGEMM's scheme (``torch.ops.quantized.embedding_bag_byte_prepack``) is asymmetric and per row, with no
search: ``scale = (max − min)/255``, ``bias = min``, ``ŵ = scale·u + bias`` for ``u ∈ [0, 255]``; each
packed row holds d code bytes followed by the float32 scale and bias (d + 8 bytes). Lookups use the fused
``embedding_bag_byte_rowwise_offsets`` kernel. Used by ``benchmarks/bench_lookup.py`` and the CLI's
``benchmark`` command. (The quantized layers hold our own symmetric codes in this layout:
:mod:`mlet_compress.ops.quant.fused`.)
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Optional

import torch
from torch import Tensor

from ..errors import ConfigError
from .bags import bag_offsets
from .quant import sqnr_db
from .quant.fused import to_fused_rows

_MODES = ("sum", "mean")


@functools.lru_cache(maxsize=1)
def fbgemm_available() -> bool:
    """Whether this torch build ships the quantized embedding-bag byte kernels."""
    try:
        torch.ops.quantized.embedding_bag_byte_prepack  # noqa: B018
        torch.ops.quantized.embedding_bag_byte_rowwise_offsets  # noqa: B018
    except (AttributeError, RuntimeError):
        return False
    return True


def _require() -> None:
    if not fbgemm_available():
        raise ConfigError("this torch build has no torch.ops.quantized.embedding_bag_byte_* kernels (FBGEMM)")


def fbgemm_prepack(weight: Tensor) -> Tensor:
    """Quantize a float n×d table into FBGEMM's fused 8-bit row-wise layout (uint8 n×(d+8)).

    Example:
        >>> fbgemm_prepack(torch.randn(4, 16)).shape   # doctest: +SKIP
        torch.Size([4, 24])
    """
    _require()
    if weight.dim() != 2 or not weight.is_floating_point():
        raise ConfigError(f"fbgemm_prepack: expected a 2-D float table, got {weight.dtype} {tuple(weight.shape)}")
    return torch.ops.quantized.embedding_bag_byte_prepack(weight.detach().to(torch.float32).contiguous())


def fbgemm_dequantize(packed: Tensor) -> Tensor:
    """The float32 n×d table that a prepacked FBGEMM table represents."""
    _require()
    return torch.ops.quantized.embedding_bag_byte_unpack(packed)


def fbgemm_embedding_bag(packed: Tensor, input: Tensor, offsets: Optional[Tensor] = None, *, mode: str = "sum",
                         per_sample_weights: Optional[Tensor] = None, include_last_offset: bool = False) -> Tensor:
    """Pooled lookup over a prepacked table with the fused kernel (``F.embedding_bag`` conventions).

    The kernel itself only sums (it ignores its ``mode`` argument in current torch builds); ``mean``
    divides the sums by the bag sizes afterwards (empty bags stay 0). ``max`` is refused.

    Args:
        packed: output of :func:`fbgemm_prepack` (or :func:`pack_symmetric_rowwise`).
        input / offsets: 1-D indices with offsets, or 2-D fixed-size bags.
        mode: "sum" or "mean". per_sample_weights: optional (sum mode).
        include_last_offset: as in ``nn.EmbeddingBag``.

    Example:
        >>> p = fbgemm_prepack(torch.randn(10, 8))                    # doctest: +SKIP
        >>> fbgemm_embedding_bag(p, torch.tensor([[1, 2]])).shape     # doctest: +SKIP
        torch.Size([1, 8])
    """
    _require()
    if mode not in _MODES:
        raise ConfigError(f"fbgemm_embedding_bag: mode={mode!r} is not supported by the fused kernel; use one of {_MODES}")
    if per_sample_weights is not None and mode != "sum":
        raise ConfigError("fbgemm_embedding_bag: per_sample_weights needs mode='sum'")
    flat, offs = bag_offsets(input, offsets)
    if per_sample_weights is not None:
        per_sample_weights = per_sample_weights.reshape(-1).to(torch.float32)
    out = torch.ops.quantized.embedding_bag_byte_rowwise_offsets(
        packed, flat, offs, False, 0, False, per_sample_weights, None, include_last_offset)
    if mode == "mean":
        ends = offs[1:] if include_last_offset else torch.cat([offs[1:], offs.new_tensor([flat.numel()])])
        sizes = (ends - offs[: ends.numel()]).clamp_min(1).to(out.dtype)
        out = out / sizes.unsqueeze(1)
    return out


def pack_symmetric_rowwise(codes8: Tensor, scale: Tensor) -> Tensor:
    """Our 8-bit symmetric table in FBGEMM's fused row layout, so its kernel can pool it.

    Row r becomes ``[q + 128 (uint8) × d, scale_r (f32), -128·scale_r (f32)]``: FBGEMM computes
    ``fma(u, scale, bias) = fl(scale·q)``, our dequantized value, exactly (bags of one row are
    bit-identical to ours; larger bags differ by FBGEMM's fused accumulation, ~1 ulp per row). The 8-bit
    case of :func:`mlet_compress.ops.quant.fused.to_fused_rows`, which the quantized layers hold as their
    only copy of the codes.

    Args:
        codes8: uint8 n×d packed 8-bit codes (two's complement bytes, see :mod:`.quant.packing`).
        scale: float32 [] or [n].

    Returns:
        uint8 n×(d+8).

    Example:
        >>> pack_symmetric_rowwise(torch.zeros(2, 4, dtype=torch.uint8), torch.tensor(1.0)).shape
        torch.Size([2, 12])
    """
    if codes8.dtype != torch.uint8 or codes8.dim() != 2:
        raise ConfigError(f"pack_symmetric_rowwise: expected uint8 n×d 8-bit codes, got {codes8.dtype} {tuple(codes8.shape)}")
    rows, in_header = to_fused_rows(codes8, scale, 8)
    if not in_header:
        raise ConfigError("pack_symmetric_rowwise: -128·scale overflows float32; rescale the table")
    return rows


@dataclass
class FbgemmReference:
    """A table in FBGEMM's 8-bit row-wise format and its reconstruction quality.

    Attributes:
        packed: uint8 n×(d+8). l2_error: ‖W − Ŵ‖₂. sqnr_db: 10·log10(‖W‖²/‖W − Ŵ‖²). nbytes: storage size.
    """

    packed: Tensor
    l2_error: float
    sqnr_db: float
    nbytes: int


def fbgemm_reference(weight: Tensor, chunk_rows: int = 65536) -> FbgemmReference:
    """Prepack ``weight`` with FBGEMM and measure its reconstruction error (in row chunks, float64 sums).

    Example:
        >>> ref = fbgemm_reference(torch.randn(100, 16))
        >>> ref.sqnr_db > 40, ref.nbytes
        (True, 2400)
    """
    packed = fbgemm_prepack(weight)
    err = sig = 0.0
    w = weight.detach()
    for start in range(0, w.shape[0], chunk_rows):
        rows = w[start:start + chunk_rows].to(torch.float64)
        deq = fbgemm_dequantize(packed[start:start + chunk_rows]).to(torch.float64)
        err += float(((rows - deq) ** 2).sum())
        sig += float((rows * rows).sum())
    return FbgemmReference(packed=packed, l2_error=err**0.5, sqnr_db=sqnr_db(sig, err),
                           nbytes=packed.numel() * packed.element_size())


__all__ = ["fbgemm_available", "fbgemm_prepack", "fbgemm_dequantize", "fbgemm_embedding_bag", "pack_symmetric_rowwise",
           "FbgemmReference", "fbgemm_reference"]
