"""Packed storage of symmetric integer codes: bit packing along rows and the :class:`QuantizedTensor` container.

Codes of a b-bit symmetric quantizer lie in ``[-qmax, qmax]`` with ``qmax = 2^(b-1) - 1``. They are
stored in a container of :func:`container_bits` bits (2 → 2, 3–4 → 4, 5–8 → 8) as **two's complement**,
packed along the last dimension, little-endian inside a byte: code ``k`` of a row goes to byte ``k // per``
at bit offset ``(k % per) * cb`` where ``per = 8 // cb``. A row therefore occupies
``ceil(d * cb / 8)`` bytes (the last byte is zero-padded), so gathering rows of the packed table is a
plain row gather. For 8-bit containers the packed row is the int8 code row reinterpreted as uint8.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import torch
from torch import Tensor

from ..errors import ConfigError

MIN_BITS, MAX_BITS = 2, 8
GRANULARITIES = ("table", "row")


def check_bits(bits: int, where: str = "quantization") -> int:
    """Validate a bit width (an int in 2..8) and return it.

    Raises:
        ConfigError: anything else (0, 1 — a 1-bit symmetric quantizer has no non-zero level —, 9, floats).
    """
    if isinstance(bits, bool) or not isinstance(bits, int) or not MIN_BITS <= bits <= MAX_BITS:
        raise ConfigError(f"{where}: bits={bits!r} is not supported; use an integer in {MIN_BITS}..{MAX_BITS}")
    return bits


def qmax(bits: int) -> int:
    """Largest code magnitude of the b-bit symmetric quantizer: ``2^(b-1) - 1``.

    Example:
        >>> qmax(8), qmax(4), qmax(2)
        (127, 7, 1)
    """
    return (1 << (check_bits(bits) - 1)) - 1


def container_bits(bits: int) -> int:
    """Bits each code occupies once packed: 2 for 2-bit, 4 for 3–4-bit, 8 for 5–8-bit codes.

    Example:
        >>> [container_bits(b) for b in range(2, 9)]
        [2, 4, 4, 8, 8, 8, 8]
    """
    b = check_bits(bits)
    return 2 if b == 2 else 4 if b <= 4 else 8


def packed_cols(dim: int, bits: int) -> int:
    """Bytes per packed row of ``dim`` codes: ``ceil(dim * container_bits / 8)``."""
    return math.ceil(dim * container_bits(bits) / 8)


def pack_rows(codes: Tensor, bits: int) -> Tensor:
    """Pack int8 codes (…×d) into uint8 (…×ceil(d·cb/8)) along the last dim (two's complement).

    Args:
        codes: int8 tensor with values in ``[-qmax(bits), qmax(bits)]``.
        bits: quantizer bit width (2..8).

    Returns:
        uint8 tensor; row gathers commute with packing.

    Raises:
        ConfigError: wrong dtype or codes outside the range of ``bits``.

    Example:
        >>> pack_rows(torch.tensor([[1, -1, 7]], dtype=torch.int8), 4).tolist()
        [[241, 7]]
    """
    cb = container_bits(bits)
    if codes.dtype != torch.int8:
        raise ConfigError(f"pack_rows: codes must be int8, got {codes.dtype}; quantize first")
    if codes.dim() == 0:
        raise ConfigError("pack_rows: codes must have at least one dimension")
    if codes.numel():
        lo, hi = torch.aminmax(codes)
        m = qmax(bits)
        if int(lo) < -m or int(hi) > m:
            raise ConfigError(f"pack_rows: codes span [{int(lo)}, {int(hi)}], outside [-{m}, {m}] for bits={bits}")
    u = codes.contiguous().view(torch.uint8)
    if cb == 8:
        return u.clone()
    per, mask = 8 // cb, (1 << cb) - 1
    d = u.shape[-1]
    cols = packed_cols(d, bits)
    if cols * per != d:
        u = torch.nn.functional.pad(u, (0, cols * per - d))
    u = (u & mask).reshape(*u.shape[:-1], cols, per)
    out = u[..., 0].clone()
    for k in range(1, per):
        out |= u[..., k] << (k * cb)
    return out


def unpack_rows(packed: Tensor, bits: int, dim: int) -> Tensor:
    """Inverse of :func:`pack_rows`: uint8 (…×cols) → int8 (…×dim).

    Example:
        >>> unpack_rows(torch.tensor([[241, 7]], dtype=torch.uint8), 4, 3).tolist()
        [[1, -1, 7]]
    """
    cb = container_bits(bits)
    if packed.dtype != torch.uint8:
        raise ConfigError(f"unpack_rows: packed codes must be uint8, got {packed.dtype}")
    cols = packed_cols(dim, bits)
    if packed.dim() == 0 or packed.shape[-1] != cols:
        raise ConfigError(f"unpack_rows: {dim} codes of {bits} bits need {cols} bytes per row, got shape {tuple(packed.shape)}")
    if cb == 8:
        return packed.view(torch.int8)
    per, mask, sign = 8 // cb, (1 << cb) - 1, 1 << (cb - 1)
    shifts = torch.arange(0, 8, cb, dtype=torch.uint8, device=packed.device)
    u = (packed.unsqueeze(-1) >> shifts) & mask  # …×cols×per, values in [0, 2^cb)
    u = u.reshape(*packed.shape[:-1], cols * per)[..., :dim]
    return ((u ^ sign).to(torch.int8) - sign).to(torch.int8)


def dequantize(codes: Tensor, scale: Tensor) -> Tensor:
    """``codes * scale`` in float32; ``scale`` is 0-d (per table) or (n,) (per row, broadcast over the last dim).

    Example:
        >>> dequantize(torch.tensor([[2, -1]], dtype=torch.int8), torch.tensor(0.5)).tolist()
        [[1.0, -0.5]]
    """
    s = scale.to(torch.float32)
    if s.dim() == 1:
        s = s.unsqueeze(-1)
    return codes.to(torch.float32).mul_(s)  # in place: one output allocation


@dataclass
class QuantizedTensor:
    """A quantized n×d table: packed codes, scale(s) and the quality of the approximation.

    Attributes:
        packed: uint8 n×packed_cols(d, bits) (see module docstring for the layout).
        scale: float32, shape [] (``granularity="table"``) or [n] (``"row"``).
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


def sqnr_db(signal_sq: float, error_sq: float) -> float:
    """10·log10(signal² / error²); inf when the error is 0, -inf when the signal is 0 but not the error."""
    if error_sq <= 0.0:
        return math.inf
    if signal_sq <= 0.0:
        return -math.inf
    return 10.0 * math.log10(signal_sq / error_sq)


__all__ = [
    "GRANULARITIES", "check_bits", "qmax", "container_bits", "packed_cols", "pack_rows", "unpack_rows",
    "dequantize", "QuantizedTensor", "sqnr_db",
]
