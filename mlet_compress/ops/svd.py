"""Truncated SVD of an embedding table through its Gram matrix (Eckart–Young), streaming in row chunks.

For a table ``W`` (n×d, n ≫ d) the right singular vectors and singular values are the eigenvectors and
square roots of the eigenvalues of ``G = WᵀW`` (d×d). ``G`` is accumulated in float64 over row chunks, so
the table can be a memory-mapped / positioned-read checkpoint tensor and memory stays O(d² + chunk).
The best rank-r approximation (Frobenius and spectral norms) is ``W V_r V_rᵀ``: factors
``A = W V_r`` (n×r) and ``B = V_rᵀ`` (r×d), with squared error ``Σ_{i≥r} σ_i²``.

A table is given either as a tensor or as ``read_rows(start, stop) -> Tensor`` plus ``num_rows``;
:func:`.rows.as_row_reader` normalises both.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterator, Optional

import torch
from torch import Tensor

from ..errors import ConfigError
from .rows import DEFAULT_CHUNK_ROWS, TableLike, as_row_reader, iter_chunks, raise_nonfinite

_GRAM_ROWS = 8192  # rows per float64 GEMM (a cache-friendly reused buffer)


# --------------------------------------------------------------------------------------------- gram / svd
def gram_matrix(table: TableLike, num_rows: Optional[int] = None, dim: Optional[int] = None, *,
                chunk_rows: int = DEFAULT_CHUNK_ROWS, name: str = "table") -> Tensor:
    """``WᵀW`` in float64, accumulated over row chunks.

    Args:
        table: n×d tensor or ``read_rows(start, stop)`` callable (any float dtype).
        num_rows: row count (required with a callable).
        dim: expected row width (checked when given).
        chunk_rows: rows read per step; memory is O(chunk_rows·d + d²).
        name: table name for error messages.

    Returns:
        d×d float64 symmetric positive semi-definite matrix.

    Raises:
        ConfigError: bad table (not float, 0 rows, ragged chunks).
        NumericalError: a row holds NaN/Inf (the message names the first such row).

    Example:
        >>> gram_matrix(torch.eye(3)).diag().tolist()
        [1.0, 1.0, 1.0]
    """
    read, n = as_row_reader(table, num_rows, name=name)
    gram: Optional[Tensor] = None
    buf: Optional[Tensor] = None  # reused float64 copy of a sub-chunk (fresh allocations page-fault)
    for start, _, rows in iter_chunks(read, n, chunk_rows, name=name, dim=dim):
        if gram is None:
            gram = torch.zeros(rows.shape[1], rows.shape[1], dtype=torch.float64, device=rows.device)
        for k in range(0, rows.shape[0], _GRAM_ROWS):
            part = rows[k:k + _GRAM_ROWS]
            if part.dtype == torch.float64:
                r64 = part
            else:
                if buf is None or buf.shape[0] < part.shape[0]:
                    buf = torch.empty(min(_GRAM_ROWS, rows.shape[0]), rows.shape[1], dtype=torch.float64, device=rows.device)
                r64 = buf[: part.shape[0]].copy_(part)
            before = gram.diagonal().sum()
            gram.addmm_(r64.T, r64)
            # squares never cancel, so a NaN/Inf anywhere in the sub-chunk shows on the diagonal
            if not bool(torch.isfinite(gram.diagonal().sum() - before)):
                raise_nonfinite(part, start + k, name)
    if gram is None:  # unreachable: as_row_reader refuses 0 rows
        raise ConfigError(f"{name}: table has no rows")
    return gram


def svd_from_gram(gram: Tensor) -> tuple[Tensor, Tensor]:
    """Singular values (descending) and right singular vectors of ``W`` from ``G = WᵀW``.

    Args:
        gram: d×d symmetric PSD matrix (any float dtype; computed in float64).

    Returns:
        ``(sigma, V)``: sigma (d,) float64 descending, V (d×d) float64 with column i paired with sigma[i].
        Eigenvalues that round-off made slightly negative are clamped to 0.

    Example:
        >>> s, v = svd_from_gram(torch.diag(torch.tensor([1., 4.]))); s.tolist()
        [2.0, 1.0]
    """
    if gram.dim() != 2 or gram.shape[0] != gram.shape[1]:
        raise ConfigError(f"gram matrix must be square, got shape {tuple(gram.shape)}")
    g = gram.to(torch.float64)
    g = (g + g.T) * 0.5
    evals, evecs = torch.linalg.eigh(g)
    evals = evals.flip(0).clamp_min(0.0)
    return evals.sqrt(), evecs.flip(1)


def select_rank(sigma: Tensor, rank: Optional[int] = None, energy: Optional[float] = None) -> int:
    """The kept rank: ``rank`` itself, or the smallest r whose leading σ² hold ``energy`` of Σσ².

    With ``energy``, r is the smallest with ``Σ_{i<r} σ_i² ≥ energy·Σσ² − tol`` where
    ``tol = 4·d·eps64·Σσ²`` absorbs round-off: ``energy=1.0`` gives the numerical rank (≤ d).

    Args:
        sigma: singular values, descending (d,).
        rank: 1..d.
        energy: fraction of the squared Frobenius norm to keep, in (0, 1].

    Returns:
        r in 1..d.

    Raises:
        ConfigError: neither/both given, rank outside 1..d, energy outside (0, 1].

    Example:
        >>> select_rank(torch.tensor([3., 1.]), energy=0.9)
        1
    """
    d = int(sigma.numel())
    if (rank is None) == (energy is None):
        raise ConfigError(f"give exactly one of rank= or energy= (got rank={rank}, energy={energy})")
    if rank is not None:
        if isinstance(rank, bool) or not isinstance(rank, int) or not 1 <= rank <= d:
            raise ConfigError(f"rank={rank!r} is invalid for a table of dim {d}; use an integer in 1..{d}")
        return rank
    e = float(energy)  # type: ignore[arg-type]
    if not (0.0 < e <= 1.0):
        raise ConfigError(f"energy={energy!r} must be in (0, 1] (fraction of Σσ² to keep)")
    lam = sigma.to(torch.float64) ** 2
    cums = torch.cumsum(lam, 0)
    total = float(cums[-1])
    if total == 0.0:
        return 1
    tol = 4.0 * d * torch.finfo(torch.float64).eps * total
    r = int(torch.searchsorted(cums, torch.tensor([e * total - tol], dtype=torch.float64))[0]) + 1
    return min(max(r, 1), d)


# --------------------------------------------------------------------------------------------- factors
@dataclass
class LowRankPlan:
    """The truncated SVD of a table without its n×r factor (computed later, chunk by chunk).

    Attributes:
        V: d×r float64 leading right singular vectors.
        sigma: all d singular values (float64, descending).
        rank: r.
        error_sq: Σ of the discarded σ² (= ‖W − W V_r V_rᵀ‖_F²).
        total_sq: Σσ² (= ‖W‖_F²).
    """

    V: Tensor
    sigma: Tensor
    rank: int
    error_sq: float
    total_sq: float

    @property
    def rel_error(self) -> float:
        """‖W − AB‖_F / ‖W‖_F (0 for an all-zero table)."""
        return math.sqrt(self.error_sq / self.total_sq) if self.total_sq > 0 else 0.0

    def B(self, dtype: torch.dtype = torch.float32) -> Tensor:
        """The r×d factor ``V_rᵀ``."""
        return self.V.T.contiguous().to(dtype)


@dataclass
class LowRankResult:
    """Factors of the best rank-r approximation ``W ≈ A @ B``.

    Attributes:
        A: n×r (= W V_r). B: r×d (= V_rᵀ). sigma: all d singular values. rank: r.
        error_sq: Σ discarded σ². rel_error: sqrt(error_sq / ‖W‖_F²).
    """

    A: Tensor
    B: Tensor
    sigma: Tensor
    rank: int
    error_sq: float
    rel_error: float


def plan_low_rank(table: TableLike, *, num_rows: Optional[int] = None, rank: Optional[int] = None,
                  energy: Optional[float] = None, chunk_rows: int = DEFAULT_CHUNK_ROWS,
                  name: str = "table") -> LowRankPlan:
    """One streaming pass: Gram matrix, its eigen-decomposition and the kept rank.

    Args:
        table: n×d tensor or ``read_rows`` callable.
        num_rows: row count (with a callable).
        rank / energy: exactly one (see :func:`select_rank`).
        chunk_rows: rows per read.
        name: table name for errors.

    Returns:
        :class:`LowRankPlan`.

    Example:
        >>> plan_low_rank(torch.eye(4), rank=2).error_sq
        2.0
    """
    gram = gram_matrix(table, num_rows, chunk_rows=chunk_rows, name=name)
    sigma, V = svd_from_gram(gram)
    try:
        r = select_rank(sigma, rank=rank, energy=energy)
    except ConfigError as exc:
        raise ConfigError(f"{name}: {exc}") from None
    lam = sigma**2
    return LowRankPlan(V=V[:, :r].contiguous(), sigma=sigma, rank=r,
                       error_sq=float(lam[r:].sum()), total_sq=float(lam.sum()))


def project_rows(rows: Tensor, V: Tensor, out_dtype: torch.dtype = torch.float32) -> Tensor:
    """``rows @ V`` (rows of A), computed in float64 when ``out_dtype`` is float64, else float32.

    Example:
        >>> project_rows(torch.ones(2, 3), torch.ones(3, 1)).tolist()
        [[3.0], [3.0]]
    """
    work = torch.float64 if out_dtype == torch.float64 else torch.float32
    return (rows.to(work) @ V.to(work)).to(out_dtype)


def iter_projected_rows(table: TableLike, plan: LowRankPlan, *, num_rows: Optional[int] = None,
                        chunk_rows: int = DEFAULT_CHUNK_ROWS, out_dtype: torch.dtype = torch.float32,
                        name: str = "table") -> Iterator[tuple[int, int, Tensor]]:
    """Yield ``(start, stop, A[start:stop])`` so A can be written to a file without holding it.

    Example:
        >>> p = plan_low_rank(torch.eye(3), rank=1)
        >>> [a.shape for _, _, a in iter_projected_rows(torch.eye(3), p, chunk_rows=2)]
        [torch.Size([2, 1]), torch.Size([1, 1])]
    """
    read, n = as_row_reader(table, num_rows, name=name)
    V = plan.V.to(torch.float64 if out_dtype == torch.float64 else torch.float32)
    for start, stop, rows in iter_chunks(read, n, chunk_rows, name=name, dim=V.shape[0]):
        yield start, stop, project_rows(rows, V, out_dtype)


def low_rank_factors(table: TableLike, *, num_rows: Optional[int] = None, rank: Optional[int] = None,
                     energy: Optional[float] = None, chunk_rows: int = DEFAULT_CHUNK_ROWS,
                     out_dtype: torch.dtype = torch.float32, name: str = "table") -> LowRankResult:
    """Best rank-r factors ``A`` (n×r) and ``B`` (r×d) of a table, in memory.

    Args:
        table: n×d float tensor or ``read_rows`` callable (then ``num_rows`` is required).
        rank / energy: exactly one; rank in 1..d, energy in (0, 1].
        chunk_rows: rows per read (two passes: Gram, then projection).
        out_dtype: dtype of A and B.
        name: table name for error messages.

    Returns:
        :class:`LowRankResult`.

    Raises:
        ConfigError: non-float / empty table, bad rank or energy.
        NumericalError: NaN/Inf in the table.

    Example:
        >>> w = torch.randn(100, 8)
        >>> res = low_rank_factors(w, rank=8)
        >>> bool(torch.allclose(res.A @ res.B, w, atol=1e-5))
        True
    """
    plan = plan_low_rank(table, num_rows=num_rows, rank=rank, energy=energy, chunk_rows=chunk_rows, name=name)
    read, n = as_row_reader(table, num_rows, name=name)
    work = torch.float64 if out_dtype == torch.float64 else torch.float32
    V = plan.V.to(work)
    A = torch.empty(n, plan.rank, dtype=out_dtype, device=V.device)
    for start, stop, rows in iter_chunks(read, n, chunk_rows, name=name, dim=V.shape[0]):
        if rows.dtype == work and out_dtype == work:
            torch.matmul(rows, V, out=A[start:stop])  # straight into A: no per-chunk allocation
        else:
            A[start:stop] = project_rows(rows, V, out_dtype)
    return LowRankResult(A=A, B=plan.B(out_dtype), sigma=plan.sigma, rank=plan.rank,
                         error_sq=plan.error_sq, rel_error=plan.rel_error)


__all__ = [
    "gram_matrix", "svd_from_gram", "select_rank", "LowRankPlan",
    "LowRankResult", "plan_low_rank", "project_rows", "iter_projected_rows", "low_rank_factors",
]
