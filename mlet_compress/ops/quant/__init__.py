"""The quantizer primitive in one place: uniform symmetric quantization with an L2 grid-searched scale.

- :mod:`.core` — ``quantize`` / ``dequantize``, validation, candidate scales, the exhaustive reference search;
- :mod:`.search` — the fast exact search (same choice as the exhaustive one);
- :mod:`.packing` — 2/4/8-bit codes packed along rows (two's complement, little-endian in a byte);
- :mod:`.table` — whole tables, streamed: ``search_scale``, ``iter_quantized_rows``, ``quantize_tensor``;
- :mod:`.fused` — the codes in FBGEMM's fused row layout, pooled by PyTorch's row-wise kernels.

Example:
    >>> import torch
    >>> from mlet_compress.ops.quant import dequantize, quantize, search_scale
    >>> w = torch.tensor([[0.5, -1.0, 0.25]])
    >>> s = search_scale(w, bits=8)
    >>> float((dequantize(quantize(w, s, 8), s) - w).abs().max()) < 0.01
    True
"""

from .core import (
    FP16_MAX, FP16_MIN_NORMAL, GRANULARITIES, MAX_BITS, MIN_BITS, REFINE, REFINE_MIN_BITS, SCALE_DTYPES, TINY_SCALE,
    candidate_errors, candidate_scales, cast_scale, check_bits, check_granularity, check_grid, check_scale_dtype,
    dequantize, fine_candidates, qmax, quant_error, quantize, refined, scale_dtype_name, search_scale_exhaustive,
    sqnr_db,
)
from .packing import container_bits, pack_rows, packed_cols, unpack_rows
from .table import (
    DEFAULT_CHUNK_ROWS, QuantizedChunk, QuantizedTensor, iter_quantized_rows, quantization_error, quantize_tensor,
    search_scale,
)

__all__ = [
    "GRANULARITIES", "MIN_BITS", "MAX_BITS", "TINY_SCALE", "DEFAULT_CHUNK_ROWS", "SCALE_DTYPES", "FP16_MIN_NORMAL",
    "FP16_MAX", "check_scale_dtype", "scale_dtype_name", "cast_scale", "REFINE", "REFINE_MIN_BITS", "refined",
    "fine_candidates",
    "check_bits", "check_grid", "check_granularity", "qmax", "candidate_scales", "candidate_errors",
    "quantize", "dequantize", "quant_error", "sqnr_db", "search_scale_exhaustive",
    "container_bits", "packed_cols", "pack_rows", "unpack_rows",
    "QuantizedTensor", "QuantizedChunk", "search_scale", "iter_quantized_rows", "quantize_tensor",
    "quantization_error",
]
