"""Packed storage of symmetric integer codes: bit packing along rows .

Codes of a b-bit symmetric quantizer lie in ``[-qmax, qmax]`` with ``qmax = 2^(b-1) - 1``. They are
stored in a container of :func:`container_bits` bits (2 → 2, 3–4 → 4, 5–8 → 8) as **two's complement**,
packed along the last dimension, little-endian inside a byte: code ``k`` of a row goes to byte ``k // per``
at bit offset ``(k % per) * cb`` where ``per = 8 // cb``. A row therefore occupies
``ceil(d * cb / 8)`` bytes (the last byte is zero-padded), so gathering rows of the packed table is a
plain row gather. For 8-bit containers the packed row is the int8 code row reinterpreted as uint8.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from ...errors import ConfigError
from .core import check_bits, qmax


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


__all__ = ["container_bits", "packed_cols", "pack_rows", "unpack_rows"]
