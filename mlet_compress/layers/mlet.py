"""MLET layers: an n×k table followed by a bias-free k→d projection (paper §1, §3).

A lookup is ``table[idx] @ proj.T``; the n×d product is never formed while training. For bags the k-dim
rows are pooled first and projected once, which is exact for ``sum`` and ``mean`` (also with
``per_sample_weights``) because pooling is linear.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import ConfigError
from ..ops.collapse import collapse_weight
from ..ops.hashing import hash_indices
from ._base import check_mode

TABLE_INITS = ("match", "normal", "xavier_uniform", "uniform")


@dataclass(frozen=True)
class ModuleOrigin:
    """The plain table an MLET module replaced, so collapsing restores exactly that module.

    Attributes:
        cls: its class (``nn.Embedding``, ``nn.EmbeddingBag``, a subclass, or a hashed twin).
        dtype: its weight dtype (the collapsed table's dtype).
        options: its torch options (``module_options``: padding_idx, max_norm, sparse, mode, ...).
        original_num_embeddings: the index space before hashing (hashed tables), else None.
    """

    cls: type
    dtype: torch.dtype
    options: dict[str, Any] = field(default_factory=dict)
    original_num_embeddings: Optional[int] = None


class _MLETMixin:
    """Parameters and initialisation shared by :class:`MLETEmbedding` and :class:`MLETEmbeddingBag`.

    ``origin`` is the :class:`ModuleOrigin` recorded by :func:`mlet_compress.wrap` (None for a module built
    directly: it collapses to a plain ``nn.Embedding`` / ``nn.EmbeddingBag``).
    """

    table: nn.Parameter
    proj: nn.Parameter
    origin: Optional[ModuleOrigin] = None

    def _init_factors(
        self,
        num_embeddings: int,
        embedding_dim: int,
        inner_dim: int,
        *,
        dtype: Optional[torch.dtype],
        device,
    ) -> None:
        if num_embeddings < 1 or embedding_dim < 1 or inner_dim < 1:
            raise ConfigError(
                f"MLET needs positive sizes, got num_embeddings={num_embeddings}, "
                f"embedding_dim={embedding_dim}, inner_dim={inner_dim}"
            )
        self.num_embeddings = num_embeddings
        self.embedding_dim = embedding_dim
        self.inner_dim = inner_dim
        self.table = nn.Parameter(torch.empty(num_embeddings, inner_dim, dtype=dtype, device=device))
        self.proj = nn.Parameter(torch.empty(embedding_dim, inner_dim, dtype=dtype, device=device))

    @torch.no_grad()
    def reset_parameters(self, init_std: float = 0.25, table_init: str = "normal", table_std: float = 1.0) -> None:
        """Initialise the factors (paper §4).

        Args:
            init_std: std of the Gaussian projection (paper: 0.25 for DLRM, 0.5 for other models).
            table_init: ``"normal"`` (N(0, table_std²), torch's Embedding default with std 1),
                ``"xavier_uniform"`` (the paper's table init), ``"uniform"`` (DLRM's ±sqrt(1/n)),
                ``"match"`` is resolved by :func:`wrap` to ``"normal"`` with the replaced table's std.
            table_std: std for ``"normal"``.
        """
        if table_init in ("normal", "match"):
            self.table.normal_(0.0, table_std)
        elif table_init == "xavier_uniform":
            nn.init.xavier_uniform_(self.table)
        elif table_init == "uniform":
            bound = math.sqrt(1.0 / self.num_embeddings)
            self.table.uniform_(-bound, bound)
        else:
            raise ConfigError(f"table_init={table_init!r} is not one of {TABLE_INITS}")
        self.proj.normal_(0.0, init_std)
        if self.padding_idx is not None:
            self.table[self.padding_idx].zero_()

    @torch.no_grad()
    def init_from_weight(self, weight: Tensor, init_std: float = 0.25, generator: Optional[torch.Generator] = None) -> None:
        """Set the factors so that ``table @ proj.T == weight`` (up to float round-off).

        The projection gets orthogonal rows scaled to the norm a Gaussian of std ``init_std`` would
        have (``init_std * sqrt(k)``), and ``table = weight @ proj / s²``. Requires ``k >= d``.
        """
        d, k = self.embedding_dim, self.inner_dim
        if k < d:
            raise ConfigError(f"preserving a pretrained table needs inner_dim >= embedding_dim, got k={k} < d={d}")
        g = torch.randn(k, d, generator=generator, dtype=torch.float64)
        q, _ = torch.linalg.qr(g)  # k×d, orthonormal columns
        s = init_std * math.sqrt(k)
        proj = (q.T * s)  # d×k, proj @ proj.T = s² I
        table = weight.to(torch.float64) @ proj / (s * s)
        self.proj.copy_(proj.to(self.proj.dtype))
        self.table.copy_(table.to(self.table.dtype))

    def effective_weight(self, dtype: torch.dtype = torch.float32) -> Tensor:
        """The n×d table ``table @ proj.T`` computed in at least fp32, cast to ``dtype`` (what :func:`collapse` stores)."""
        with torch.no_grad():
            return collapse_weight(self.table, self.proj, dtype)

    def _project(self, rows: Tensor) -> Tensor:
        return rows @ self.proj.T

    def extra_repr(self) -> str:  # noqa: D102
        s = f"{self.num_embeddings}, {self.embedding_dim}, inner_dim={self.inner_dim}"
        if getattr(self, "mode", None) is not None:
            s += f", mode={self.mode!r}"
        if self.padding_idx is not None:
            s += f", padding_idx={self.padding_idx}"
        if getattr(self, "include_last_offset", False):
            s += ", include_last_offset=True"
        if self.sparse:
            s += ", sparse=True"
        if self.num_buckets is not None:
            s += f", num_buckets={self.num_buckets}"
        return s


class MLETEmbedding(_MLETMixin, nn.Module):
    """Drop-in replacement of ``nn.Embedding`` trained as an n×k table times a k→d projection.

    Args:
        num_embeddings: rows n (buckets m when ``num_buckets`` is set).
        embedding_dim: output width d.
        inner_dim: inner width k (paper: k > d helps; k = 64 is a good default).
        padding_idx, scale_grad_by_freq, sparse: as ``nn.Embedding`` (``sparse`` applies to the table;
            the projection's gradient is always dense).
        num_buckets: if set, indices are mapped with ``idx % num_buckets`` first (modulo hashing).
        init_std: std of the Gaussian projection.

    Example:
        >>> emb = MLETEmbedding(1000, 16, inner_dim=64)
        >>> emb(torch.tensor([[1, 2], [3, 4]])).shape
        torch.Size([2, 2, 16])
    """

    def __init__(
        self,
        num_embeddings: int,
        embedding_dim: int,
        inner_dim: int,
        padding_idx: Optional[int] = None,
        scale_grad_by_freq: bool = False,
        sparse: bool = False,
        *,
        num_buckets: Optional[int] = None,
        init_std: float = 0.25,
        table_init: str = "normal",
        table_std: float = 1.0,
        dtype: Optional[torch.dtype] = None,
        device=None,
    ) -> None:
        super().__init__()
        if padding_idx is not None and padding_idx < 0:
            padding_idx = num_embeddings + padding_idx
        self.padding_idx = padding_idx
        self.scale_grad_by_freq = scale_grad_by_freq
        self.sparse = sparse
        self.num_buckets = num_buckets
        self._init_factors(num_embeddings, embedding_dim, inner_dim, dtype=dtype, device=device)
        self.reset_parameters(init_std, table_init, table_std)

    def inner_rows(self, input: Tensor) -> Tensor:
        """The k-dim table rows of ``input`` (hashed when ``num_buckets`` is set), before projection."""
        return F.embedding(
            hash_indices(input, self.num_buckets), self.table, self.padding_idx, None, 2.0,
            self.scale_grad_by_freq, self.sparse,
        )

    def forward(self, input: Tensor) -> Tensor:
        """Look up ``input`` (any shape of indices) → ``input.shape + (d,)``."""
        return self._project(self.inner_rows(input))


class MLETEmbeddingBag(_MLETMixin, nn.Module):
    """Drop-in replacement of ``nn.EmbeddingBag`` (modes ``sum`` and ``mean``) with MLET factors.

    Rows are pooled in k dimensions and projected once after pooling.

    Example:
        >>> bag = MLETEmbeddingBag(1000, 16, inner_dim=64, mode="sum")
        >>> bag(torch.tensor([1, 2, 3]), torch.tensor([0, 2])).shape
        torch.Size([2, 16])
    """

    def __init__(
        self,
        num_embeddings: int,
        embedding_dim: int,
        inner_dim: int,
        mode: str = "mean",
        scale_grad_by_freq: bool = False,
        sparse: bool = False,
        include_last_offset: bool = False,
        padding_idx: Optional[int] = None,
        *,
        num_buckets: Optional[int] = None,
        init_std: float = 0.25,
        table_init: str = "normal",
        table_std: float = 1.0,
        dtype: Optional[torch.dtype] = None,
        device=None,
    ) -> None:
        super().__init__()
        check_mode(mode, "MLETEmbeddingBag")
        if padding_idx is not None and padding_idx < 0:
            padding_idx = num_embeddings + padding_idx
        self.mode = mode
        self.scale_grad_by_freq = scale_grad_by_freq
        self.sparse = sparse
        self.include_last_offset = include_last_offset
        self.padding_idx = padding_idx
        self.num_buckets = num_buckets
        self._init_factors(num_embeddings, embedding_dim, inner_dim, dtype=dtype, device=device)
        self.reset_parameters(init_std, table_init, table_std)

    def forward(self, input: Tensor, offsets: Optional[Tensor] = None, per_sample_weights: Optional[Tensor] = None) -> Tensor:
        """Pool bags of indices (same call signature as ``nn.EmbeddingBag``) → ``[B, d]``."""
        pooled = F.embedding_bag(
            hash_indices(input, self.num_buckets),
            self.table,
            offsets,
            None,
            2.0,
            self.scale_grad_by_freq,
            self.mode,
            self.sparse,
            per_sample_weights,
            self.include_last_offset,
            self.padding_idx,
        )
        return self._project(pooled)


def lookup_fields(modules: list[nn.Module], columns: list[Tensor]) -> Tensor:
    """Look up one index column per table and stack the results: ``[B, F, d]``.

    When every table is an :class:`MLETEmbedding` with the same (k, d, dtype), the F small projections
    run as one batched matmul (``[F, B, k] @ [F, k, d]``) instead of F separate ones — the same math,
    fewer kernel launches, which matters for models with many small tables (DLRM: 26). Any other mix
    of modules is looked up one by one.

    Example:
        >>> tabs = [MLETEmbedding(10, 4, 8) for _ in range(3)]
        >>> lookup_fields(tabs, [torch.tensor([1, 2])] * 3).shape
        torch.Size([2, 3, 4])
    """
    same = (
        len(modules) > 1
        and all(type(m) is MLETEmbedding for m in modules)
        and len({(m.inner_dim, m.embedding_dim, m.table.dtype, m.table.device) for m in modules}) == 1
    )
    if not same:
        return torch.stack([m(c) for m, c in zip(modules, columns)], dim=1)
    rows = torch.stack([m.inner_rows(c) for m, c in zip(modules, columns)])  # F×B×k
    proj = torch.stack([m.proj for m in modules])  # F×d×k
    return torch.bmm(rows, proj.transpose(1, 2)).transpose(0, 1)  # B×F×d
