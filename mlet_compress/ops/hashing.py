"""Modulo hashing of indices, the pure op of the hash stage: ``idx % num_buckets``."""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor


def hash_indices(input: Tensor, num_buckets: Optional[int]) -> Tensor:
    """Map indices into ``[0, num_buckets)`` with modulo hashing; identity when ``num_buckets`` is None."""
    if num_buckets is None:
        return input
    return torch.remainder(input, num_buckets)


def buckets_for(num_rows: int, *, ratio: Optional[float] = None, num_buckets: Optional[int] = None) -> int:
    """Rows of a hashed table: ``num_buckets``, or ``ceil(ratio · num_rows)``; never more than ``num_rows``.

    Example:
        >>> buckets_for(1000, ratio=0.25), buckets_for(10, num_buckets=64)
        (250, 10)
    """
    if num_buckets is not None:
        return min(num_buckets, num_rows)
    return max(1, min(num_rows, -(-int(round(float(ratio) * num_rows * 1e6)) // 1_000_000)))


__all__ = ["hash_indices", "buckets_for"]
