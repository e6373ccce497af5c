"""Pure tensor math for collapsing MLET factors into one table."""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from ..errors import NumericalError


def accumulation_dtype(*dtypes: torch.dtype) -> torch.dtype:
    """The dtype products are computed in: float64.

    Accumulating in float64 and rounding once makes the result independent of how rows are chunked
    (BLAS kernels sum in different orders for different shapes), so a streamed checkpoint collapse is
    bit-identical to a module-level collapse.
    """
    out = torch.float64
    for d in dtypes:
        out = torch.promote_types(out, d)
    return out


def collapse_rows(table_rows: Tensor, proj: Tensor, out_dtype: Optional[torch.dtype] = None) -> Tensor:
    """``table_rows @ proj.T`` computed in float64, cast to ``out_dtype`` (default: the table's dtype).

    Args:
        table_rows: c×k rows of the MLET table.
        proj: d×k projection.
        out_dtype: dtype of the result.

    Returns:
        c×d rows of the collapsed table.

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


def check_finite(t: Tensor, what: str) -> None:
    """Raise :class:`NumericalError` naming ``what`` when ``t`` holds NaN or Inf."""
    if t.is_floating_point() and not torch.isfinite(t).all():
        n_bad = int((~torch.isfinite(t)).sum())
        raise NumericalError(f"{what} holds {n_bad} NaN/Inf value(s); refusing to produce a broken table")
