"""Pure tensor math for collapsing MLET factors into one table."""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from ..errors import NumericalError

def accumulation_dtype(*dtypes: torch.dtype) -> torch.dtype:
    """The dtype products are computed in: the widest of the inputs, never below float32."""
    out = torch.float32
    for d in dtypes:
        out = torch.promote_types(out, d)
    return out


def collapse_rows(table_rows: Tensor, proj: Tensor, out_dtype: Optional[torch.dtype] = None) -> Tensor:
    """``table_rows @ proj.T`` computed in at least fp32, cast to ``out_dtype`` (default: the table's dtype).

    Args:
        table_rows: c×k rows of the MLET table.
        proj: d×k projection.
        out_dtype: dtype of the result.

    Returns:
        c×d rows of the collapsed table. BLAS may sum in another order for other chunk shapes or memory
        alignments, so results of different chunkings agree to float32 round-off, not bit for bit.

    Example:
        >>> collapse_rows(torch.ones(2, 3), torch.ones(4, 3)).shape
        torch.Size([2, 4])
    """
    if table_rows.shape[-1] != proj.shape[-1]:
        raise ValueError(
            f"table rows have inner dim {table_rows.shape[-1]} but the projection is {tuple(proj.shape)} (d×k)"
        )
    acc = accumulation_dtype(table_rows.dtype, proj.dtype)
    out = table_rows.to(acc) @ proj.to(acc).T
    return out.to(out_dtype or table_rows.dtype)


def collapse_weight(table: Tensor, proj: Tensor, out_dtype: Optional[torch.dtype] = None, chunk_rows: int = 65536) -> Tensor:
    """The whole n×d collapsed table, computed chunk by chunk with :func:`collapse_rows`."""
    n = table.shape[0]
    out = torch.empty(n, proj.shape[0], dtype=out_dtype or table.dtype, device=table.device)
    for a in range(0, n, chunk_rows):
        out[a : a + chunk_rows] = collapse_rows(table[a : a + chunk_rows], proj, out.dtype)
    return out


def all_finite(t: Tensor) -> bool:
    """True when ``t`` holds no NaN/Inf.

    A NaN/Inf anywhere makes the sum NaN/Inf, so a finite sum proves the tensor finite; only when the sum
    is not finite (a NaN/Inf, or a sum overflowing float32) is the exact element-wise check run.
    """
    if not t.is_floating_point() or t.numel() == 0:
        return True
    if bool(torch.isfinite(t.sum())):
        return True
    return bool(torch.isfinite(t).all())


def check_finite(t: Tensor, what: str) -> None:
    """Raise :class:`NumericalError` naming ``what`` when ``t`` holds NaN or Inf."""
    if not all_finite(t):
        n_bad = int((~torch.isfinite(t)).sum())
        raise NumericalError(f"{what} holds {n_bad} NaN/Inf value(s); refusing to produce a broken table")
