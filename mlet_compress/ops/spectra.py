"""The update MLET induces on its collapsed table (paper §3, Eq. 2), as pure tensor math.

An MLET table is ``T`` (n×k) and a projection ``P`` (d×k); the collapsed table is ``W = T Pᵀ`` (n×d).
One SGD step with learning rate η and ``G = ∂L/∂W`` (n×d) moves ``T`` by ``−η G P`` and ``P`` by ``−η Gᵀ T``, so

    ΔW = −η (T Tᵀ G + G P Pᵀ) + η² G P Tᵀ G.

The first-order update splits into a **row-local** part — row i moves by ``(‖t_i‖² g_i + g_i P Pᵀ)``, which
depends only on its own gradient, re-weighted by ``P Pᵀ``'s spectrum (the same non-zero eigenvalues as
``Pᵀ P``) — and a **cross-category** part ``Σ_{j≠i} (t_i · t_j) g_j`` that moves every row with the
gradients of the others.

Example:
    >>> T, P, G = torch.randn(6, 4, dtype=torch.float64), torch.randn(3, 4, dtype=torch.float64), torch.randn(6, 3, dtype=torch.float64)
    >>> local, cross = update_terms(T, P, G)
    >>> torch.allclose(local + cross, T @ T.T @ G + G @ P @ P.T)
    True
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from ..errors import ConfigError


def _check(T: Tensor, P: Tensor) -> None:
    if T.dim() != 2 or P.dim() != 2 or T.shape[1] != P.shape[1]:
        raise ConfigError(f"MLET factors must be table n×k and proj d×k with the same k, got {tuple(T.shape)} and "
                          f"{tuple(P.shape)}")


def update_terms(T: Tensor, P: Tensor, G: Tensor) -> tuple[Tensor, Tensor]:
    """The row-local and cross-category parts of the first-order update ``T Tᵀ G + G P Pᵀ`` (without −η).

    Args:
        T: table n×k. P: projection d×k. G: gradient of the loss with respect to ``W = T Pᵀ`` (n×d).

    Returns:
        ``(local, cross)``, each n×d: ``local[i] = ‖t_i‖² g_i + g_i P Pᵀ``, ``cross[i] = Σ_{j≠i} (t_i·t_j) g_j``.

    Raises:
        ConfigError: inconsistent shapes.
    """
    _check(T, P)
    if G.shape != (T.shape[0], P.shape[0]):
        raise ConfigError(f"gradient must be n×d = {T.shape[0]}×{P.shape[0]}, got {tuple(G.shape)}")
    self_dot = (T * T).sum(dim=1, keepdim=True)
    local = self_dot * G + G @ (P @ P.T)
    cross = T @ (T.T @ G) - self_dot * G
    return local, cross


def singular_values(x: Tensor) -> Tensor:
    """Singular values of a matrix (float64, descending), through the smaller Gram matrix.

    Example:
        >>> singular_values(torch.diag(torch.tensor([3.0, 4.0]))).tolist()
        [4.0, 3.0]
    """
    x = x.double()
    gram = x.T @ x if x.shape[0] >= x.shape[1] else x @ x.T
    ev = torch.linalg.eigvalsh(gram).clamp_min(0).flip(0)
    return ev.sqrt()


def collapsed_singular_values(T: Tensor, P: Tensor) -> Tensor:
    """Singular values of ``W = T Pᵀ`` without forming W: eigenvalues of ``Wᵀ W = P (Tᵀ T) Pᵀ`` (d×d)."""
    _check(T, P)
    T, P = T.double(), P.double()
    gram = P @ (T.T @ T) @ P.T
    return torch.linalg.eigvalsh((gram + gram.T) / 2).clamp_min(0).flip(0).sqrt()


def lr_amplification(P: Tensor) -> dict[str, float]:
    """How ``P Pᵀ`` scales the row-local gradient: its top, mean and smallest eigenvalue (the d non-zero ones).

    A single-layer table updated with learning rate ``η · mean`` moves, on average over directions, like
    MLET's row-local term with learning rate η (plain SGD); ``top / mean`` is how anisotropic that is.

    Returns:
        ``{"top", "mean", "min", "top_over_mean"}``.

    Example:
        >>> lr_amplification(torch.eye(2, 4) * 2)["mean"]
        4.0
    """
    sv = singular_values(P)
    ev = sv[: P.shape[0]] ** 2
    mean = float(ev.mean())
    return {"top": float(ev[0]), "mean": mean, "min": float(ev[-1]),
            "top_over_mean": float(ev[0]) / mean if mean > 0 else float("inf")}


def cross_category_share(T: Tensor, P: Tensor, rows: Tensor, grads: Tensor, *, chunk_rows: int = 65536) -> dict[str, float]:
    """The share of a first-order update that comes from other rows, for a gradient on ``rows``.

    ``G`` is ``grads`` on ``rows`` (as a mini-batch touching those rows would give) and zero elsewhere; the
    update is computed over all n rows in chunks. The share is ``‖cross‖² / (‖local‖² + ‖cross‖²)`` (Frobenius),
    where ``local`` and ``cross`` are :func:`update_terms`; ``touched_share`` is the same ratio restricted to
    the rows that had a gradient.

    Args:
        T: table n×k. P: projection d×k.
        rows: distinct int64 row indices [m]. grads: their gradients [m, d].
        chunk_rows: rows per chunk of the pass over the table.

    Returns:
        ``{"share", "touched_share", "rows_moved"}`` (``rows_moved`` = rows whose update is non-zero).

    Raises:
        ConfigError: repeated or out-of-range rows, or shapes that do not match.
    """
    _check(T, P)
    n = T.shape[0]
    rows = rows.long()
    if rows.numel() != torch.unique(rows).numel() or (rows.numel() and (int(rows.min()) < 0 or int(rows.max()) >= n)):
        raise ConfigError(f"rows must be distinct indices in [0, {n}), got {rows.numel()} entries")
    if grads.shape != (rows.numel(), P.shape[0]):
        raise ConfigError(f"grads must be {rows.numel()}×{P.shape[0]}, got {tuple(grads.shape)}")
    T64, G = T.double(), grads.double()
    M = T64[rows].T @ G  # k×d: Tᵀ G over the touched rows only
    PPt = P.double() @ P.double().T
    touched = torch.zeros(n, dtype=torch.bool)
    touched[rows] = True
    pos = torch.full((n,), -1, dtype=torch.long)
    pos[rows] = torch.arange(rows.numel())
    sums = torch.zeros(4, dtype=torch.float64)  # local², cross² over all rows; local², cross² over touched rows
    moved = 0
    for a in range(0, n, chunk_rows):
        t = T64[a : a + chunk_rows]
        g = torch.zeros(t.shape[0], P.shape[0], dtype=torch.float64)
        here = pos[a : a + chunk_rows]
        g[here >= 0] = G[here[here >= 0]]
        self_dot = (t * t).sum(dim=1, keepdim=True)
        local = self_dot * g + g @ PPt
        cross = t @ M - self_dot * g
        lsq, csq = (local * local).sum(dim=1), (cross * cross).sum(dim=1)
        tmask = touched[a : a + chunk_rows]
        sums += torch.stack([lsq.sum(), csq.sum(), lsq[tmask].sum(), csq[tmask].sum()])
        moved += int(((lsq + csq) > 0).sum())
    share = float(sums[1] / (sums[0] + sums[1])) if float(sums[0] + sums[1]) > 0 else 0.0
    tshare = float(sums[3] / (sums[2] + sums[3])) if float(sums[2] + sums[3]) > 0 else 0.0
    return {"share": share, "touched_share": tshare, "rows_moved": moved}


def sample_rows(n: int, m: int, seed: Optional[int] = 0) -> Tensor:
    """``min(m, n)`` distinct row indices drawn uniformly with a seeded generator (sorted)."""
    gen = torch.Generator().manual_seed(int(seed or 0))
    return torch.randperm(n, generator=gen)[: min(m, n)].sort().values


__all__ = ["update_terms", "singular_values", "collapsed_singular_values", "lr_amplification",
           "cross_category_share", "sample_rows"]
