"""Our symmetric codes in FBGEMM's fused row layout: the in-memory form PyTorch's row-wise kernels pool.

FBGEMM's row-wise embedding-bag kernels (``torch.ops.quantized.embedding_bag_{byte,4bit,2bit}_rowwise_offsets``)
read each row as unsigned codes ``u`` (8, 4 or 2 bits, packed little-endian inside a byte exactly like
:mod:`.packing`) followed by a scale and a bias — float32 for 8-bit rows (``d + 8`` bytes), float16 for
4- and 2-bit rows (``ceil(d·c/8) + 4`` bytes) — and pool ``w·(scale·u + bias)`` (one fused multiply-add
per value). A symmetric code ``q`` of a ``c``-bit container maps exactly to ``u = q + 2^(c−1)`` (flip the
top bit of every code: XOR each byte with 0x80 / 0x88 / 0xAA), and with ``scale = s``,
``bias = −2^(c−1)·s`` (exact: a power-of-two multiple) the kernel returns ``fl(s·q)`` — our dequantized
value, bit for bit — for a bag of one row. Larger bags differ from pooling the dequantized rows only by
the kernel's fused accumulation (≲ 2 roundings per pooled row).

The header of each row:

* 8-bit containers (bits 5–8): ``(s_r, −128·s_r)`` in float32, per-row or per-table ``s`` (fp32 or fp16);
* 4-/2-bit containers (bits 2–4): ``(s, −2^(c−1)·s)`` in float16 when every scale is a float16 value
  (``scale_dtype="fp16"``); otherwise the *unit* header ``(1, −2^(c−1))``: the kernel pools the integer
  codes and the caller applies the scale — per-sample weights ``s[idx]`` per row, one multiply of the
  pooled rows per table (:func:`to_fused_rows` says which).

Example:
    >>> import torch
    >>> from mlet_compress.ops.quant import pack_rows
    >>> packed = pack_rows(torch.tensor([[1, -1, 7, 0]], dtype=torch.int8), 4)
    >>> rows, in_header = to_fused_rows(packed, torch.tensor([0.5]).half(), 4)
    >>> rows.shape, in_header, fused_codes(rows, 4, 4).tolist()
    (torch.Size([1, 6]), True, [[1, -1, 7, 0]])
"""

from __future__ import annotations

import functools
from typing import Optional

import torch
from torch import Tensor

from ...errors import ConfigError
from .core import check_bits
from .packing import container_bits, packed_cols

_OPS = {8: "embedding_bag_byte_rowwise_offsets", 4: "embedding_bag_4bit_rowwise_offsets",
        2: "embedding_bag_2bit_rowwise_offsets"}
_FLIP = {8: 0x80, 4: 0x88, 2: 0xAA}  # two's complement ⇄ offset binary, every code of a byte at once
_FP16_MAX = 65504.0
_CONTAINER = {2: 2, 3: 4, 4: 4, 5: 8, 6: 8, 7: 8, 8: 8}  # container_bits without its validation (hot path)


def header_bytes(bits: int) -> int:
    """Bytes of scale + bias FBGEMM's layout adds to each row: 8 (fp32 pair) for 8-bit, 4 (fp16 pair) below.

    Example:
        >>> [header_bytes(b) for b in (2, 4, 8)]
        [4, 4, 8]
    """
    return 8 if container_bits(bits) == 8 else 4


def fused_cols(dim: int, bits: int) -> int:
    """Bytes per fused row: the packed codes plus the header."""
    return packed_cols(dim, bits) + header_bytes(bits)


@functools.lru_cache(maxsize=None)
def _op(cb: int):
    try:
        return getattr(torch.ops.quantized, _OPS[cb])
    except (AttributeError, RuntimeError):
        return None


def fused_available(bits: int) -> bool:
    """Whether this torch build has FBGEMM's row-wise embedding-bag kernel for ``bits``' container."""
    return _op(container_bits(bits)) is not None


def _header_dtype(cb: int) -> torch.dtype:
    return torch.float32 if cb == 8 else torch.float16


def to_fused_rows(packed: Tensor, scale: Tensor, bits: int, out: Optional[Tensor] = None) -> tuple[Tensor, bool]:
    """Packed two's-complement codes (:mod:`.packing`) and their scale(s) → FBGEMM fused rows.

    Args:
        packed: uint8 n×packed_cols(d, bits). scale: positive float32/float16 scale, [] or [n].
        bits: 2..8. out: optional uint8 n×fused_cols buffer to write into.

    Returns:
        ``(rows, scale_in_header)``: uint8 n×(packed_cols + header_bytes); ``scale_in_header`` is False when
        the rows carry the unit header and the caller must apply the scale itself.

    Raises:
        ConfigError: wrong dtypes or shapes.
    """
    cb = container_bits(check_bits(bits))
    if packed.dtype != torch.uint8 or packed.dim() != 2:
        raise ConfigError(f"to_fused_rows: expected uint8 n×cols packed codes, got {packed.dtype} {tuple(packed.shape)}")
    n, cols = packed.shape
    if scale.dim() > 1 or (scale.dim() == 1 and scale.shape[0] != n) or not scale.is_floating_point():
        raise ConfigError(f"to_fused_rows: scale must be a float [] or [{n}], got {scale.dtype} {tuple(scale.shape)}")
    offset = float(1 << (cb - 1))
    s = scale.detach().to(torch.float32)
    if cb == 8:
        in_header = bool(torch.isfinite(s * offset).all())
    else:
        in_header = bool((s.to(torch.float16).to(torch.float32) == s).all()) and float(s.max()) * offset <= _FP16_MAX
    if not in_header:
        s = torch.ones((), dtype=torch.float32, device=s.device)
    hdr = torch.stack([s, s * -offset], dim=-1).to(_header_dtype(cb)).expand(n, 2).contiguous()
    rows = out if out is not None else torch.empty(n, cols + header_bytes(bits), dtype=torch.uint8, device=packed.device)
    torch.bitwise_xor(packed, _FLIP[cb], out=rows[:, :cols])
    rows[:, cols:].copy_(hdr.view(torch.uint8))
    return rows, in_header


def from_fused_rows(rows: Tensor, bits: int, dim: int) -> Tensor:
    """Inverse of :func:`to_fused_rows` for the codes: uint8 n×packed_cols two's-complement packed codes."""
    cb, cols = container_bits(bits), packed_cols(dim, bits)
    return torch.bitwise_xor(rows[:, :cols], _FLIP[cb])


def header_scales(rows: Tensor, bits: int) -> Tensor:
    """The float32 scale stored in each fused row's header (1.0 for the unit header): shape [n]."""
    cb = container_bits(bits)
    h = header_bytes(bits)
    hdr = torch.empty(rows.shape[0], h // 2, dtype=torch.uint8, device=rows.device)  # aligned, contiguous
    hdr.copy_(rows[:, rows.shape[1] - h:rows.shape[1] - h // 2])
    return hdr.view(_header_dtype(cb)).reshape(-1).to(torch.float32)


def fused_codes(rows: Tensor, bits: int, dim: int) -> Tensor:
    """int8 codes (n×dim) of fused rows, decoded straight from the offset-binary bytes."""
    cb, cols = container_bits(bits), packed_cols(dim, bits)
    u = rows[:, :cols]
    if cb == 8:
        return torch.bitwise_xor(u, 0x80).view(torch.int8)
    shifts = torch.arange(0, 8, cb, dtype=torch.uint8, device=rows.device)
    v = (u.unsqueeze(-1) >> shifts) & ((1 << cb) - 1)
    v = v.reshape(rows.shape[0], cols * (8 // cb))[:, :dim]
    return v.to(torch.int8).sub_(1 << (cb - 1))


def fused_embedding_bag(rows: Tensor, bits: int, dim: int, indices: Tensor, offsets: Tensor,
                        per_sample_weights: Optional[Tensor] = None, include_last_offset: bool = False) -> Tensor:
    """Sum-pool fused rows with FBGEMM's kernel (``F.embedding_bag`` offsets conventions, sum only).

    Args:
        rows: output of :func:`to_fused_rows` (CPU). bits: 2..8. dim: codes per row (d).
        indices: 1-D int32/int64. offsets: 1-D bag starts (``offsets[0] == 0``, none past the end).
        per_sample_weights: optional float32 weights, one per index.
        include_last_offset: as in ``nn.EmbeddingBag``.

    Returns:
        float32 bags × d.

    Raises:
        IndexError: an index outside the table. RuntimeError: offsets that do not start at 0 or run past the end
            (the exceptions ``F.embedding_bag`` raises).
    """
    op = _op(_CONTAINER[bits])
    if offsets.dtype != indices.dtype:
        offsets = offsets.to(indices.dtype)
    indices, offsets = indices.contiguous(), offsets.contiguous()
    if offsets.numel():  # the kernel would read past the indices (torch's own embedding_bag checks these two)
        o = offsets.numpy()
        if o[0] != 0 or o[-1] > indices.numel():  # RuntimeError, like torch's embedding_bag (the exact path)
            raise RuntimeError(f"offsets must start at 0 and end at most at len(input)={indices.numel()}, "
                               f"got offsets[0]={int(o[0])}, offsets[-1]={int(o[-1])}")
    if per_sample_weights is not None:
        per_sample_weights = per_sample_weights.contiguous()
    try:
        out = op(rows, indices, offsets, False, 0, False, per_sample_weights, None, include_last_offset)
    except RuntimeError as exc:
        if "out of bounds" in str(exc):
            raise IndexError(f"index out of range in self ({str(exc).splitlines()[0]})") from None
        raise
    return out if out.shape[1] == dim else out[:, :dim]  # the kernel also pools a last byte's padding codes


__all__ = ["header_bytes", "fused_cols", "fused_available", "to_fused_rows", "from_fused_rows", "header_scales",
           "fused_codes", "fused_embedding_bag"]
