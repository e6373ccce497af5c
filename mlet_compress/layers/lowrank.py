"""Low-rank embedding tables: ``W ≈ A @ B`` with A n×r and B r×d, looked up as ``A[idx] @ B``.

Bags pool rows of A in r dimensions (``F.embedding_bag``) and multiply once by B: sum/mean pooling,
``per_sample_weights``, ``padding_idx`` and ``include_last_offset`` commute with the linear map, so the
result is the pooled lookup of ``A @ B`` up to float re-association. ``mode="max"`` does not commute and is
refused. With ``num_buckets`` set, indices are hashed (``idx % num_buckets``) first, so a hashed table can
be low-ranked. Built from a trained table by :meth:`LowRankEmbedding.from_embedding` (truncated SVD,
:mod:`mlet_compress.ops.svd`).
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import ConfigError
from ..ops.svd import DEFAULT_CHUNK_ROWS, low_rank_factors
from ..ops.hashing import hash_indices
from ._base import check_mode, normalize_padding_idx, refuse_max_norm


class _LowRankBase(nn.Module):
    def __init__(self, num_embeddings: int, embedding_dim: int, rank: int, *, padding_idx: Optional[int] = None,
                 sparse: bool = False, scale_grad_by_freq: bool = False, num_buckets: Optional[int] = None,
                 original_num_embeddings: Optional[int] = None, device=None, dtype=None):
        super().__init__()
        name = type(self).__name__
        for what, v in (("num_embeddings", num_embeddings), ("embedding_dim", embedding_dim)):
            if isinstance(v, bool) or not isinstance(v, int) or v <= 0:
                raise ConfigError(f"{name}: {what}={v!r} must be a positive integer")
        if isinstance(rank, bool) or not isinstance(rank, int) or not 1 <= rank <= embedding_dim:
            raise ConfigError(f"{name}: rank={rank!r} must be an integer in 1..{embedding_dim} (the embedding dim)")
        if num_buckets is not None and num_buckets != num_embeddings:
            raise ConfigError(f"{name}: num_buckets={num_buckets} must equal the stored row count {num_embeddings}")
        self.num_embeddings, self.embedding_dim, self.rank = num_embeddings, embedding_dim, rank
        self.padding_idx = normalize_padding_idx(padding_idx, num_embeddings, name)
        self.sparse, self.scale_grad_by_freq = bool(sparse), bool(scale_grad_by_freq)
        self.num_buckets = num_buckets
        self.original_num_embeddings = original_num_embeddings or num_embeddings
        self.max_norm = None
        self.rel_error: Optional[float] = None  # ‖W − AB‖_F/‖W‖_F when built by from_embedding
        kw = {"device": device, "dtype": dtype}
        self.A = nn.Parameter(torch.empty(num_embeddings, rank, **kw))
        self.B = nn.Parameter(torch.empty(rank, embedding_dim, **kw))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """A ~ N(0, 1), B ~ N(0, 1/r): entries of A @ B are ~N(0, 1) like ``nn.Embedding``'s; padding row zero."""
        nn.init.normal_(self.A)
        nn.init.normal_(self.B, std=self.rank ** -0.5)
        if self.padding_idx is not None:
            with torch.no_grad():
                self.A[self.padding_idx].zero_()

    def dense_weight(self) -> Tensor:
        """The n×d table ``A @ B`` this module represents (no grad)."""
        with torch.no_grad():
            return self.A @ self.B

    def extra_repr(self) -> str:  # noqa: D102
        s = f"{self.num_embeddings}, {self.embedding_dim}, rank={self.rank}"
        if self.padding_idx is not None:
            s += f", padding_idx={self.padding_idx}"
        if self.num_buckets is not None:
            s += f", num_buckets={self.num_buckets}, hashed_from={self.original_num_embeddings}"
        return s + (", sparse=True" if self.sparse else "")

    @classmethod
    def _factor(cls, module: nn.Module, base: type, rank: Optional[int], energy: Optional[float], chunk_rows: int):
        where = f"{cls.__name__}.from_embedding({type(module).__name__})"
        if not isinstance(module, base):
            raise ConfigError(f"{where}: expected an {base.__name__} (or subclass); use the matching LowRank class")
        refuse_max_norm(module, where)
        w = module.weight.detach()
        res = low_rank_factors(w, rank=rank, energy=energy, chunk_rows=chunk_rows, out_dtype=w.dtype, name=where)
        opts = dict(padding_idx=module.padding_idx, sparse=module.sparse, scale_grad_by_freq=module.scale_grad_by_freq,
                    num_buckets=getattr(module, "num_buckets", None),
                    original_num_embeddings=getattr(module, "original_num_embeddings", None),
                    device=w.device, dtype=w.dtype)
        return res, opts

    def _load_factors(self, res) -> "_LowRankBase":
        with torch.no_grad():
            self.A.copy_(res.A)
            self.B.copy_(res.B)
        self.rel_error = res.rel_error
        return self


class LowRankEmbedding(_LowRankBase):
    """``nn.Embedding`` look-alike storing ``A`` (n×r) and ``B`` (r×d); ``forward(idx) = A[idx] @ B``.

    Args:
        num_embeddings, embedding_dim: table shape n×d. rank: r in 1..d.
        padding_idx, sparse, scale_grad_by_freq: as in ``nn.Embedding`` (they apply to A).
        num_buckets: hash indices with ``idx % num_buckets`` first (must equal num_embeddings).

    Example:
        >>> emb = LowRankEmbedding.from_embedding(nn.Embedding(100, 16), rank=4)
        >>> emb(torch.tensor([[1, 2, 3]])).shape
        torch.Size([1, 3, 16])
    """

    def forward(self, input: Tensor) -> Tensor:  # noqa: D102
        rows = F.embedding(hash_indices(input, self.num_buckets), self.A, self.padding_idx, None, 2.0,
                           self.scale_grad_by_freq, self.sparse)
        return rows @ self.B

    @classmethod
    def from_embedding(cls, module: nn.Embedding, rank: Optional[int] = None, energy: Optional[float] = None,
                       chunk_rows: int = DEFAULT_CHUNK_ROWS) -> "LowRankEmbedding":
        """Best rank-r (or energy-selected) factorisation of a trained ``nn.Embedding``/``HashedEmbedding``.

        Raises:
            ConfigError: not an nn.Embedding, ``max_norm`` set, bad rank/energy, non-finite weights.
        """
        res, opts = cls._factor(module, nn.Embedding, rank, energy, chunk_rows)
        return cls(module.num_embeddings, module.embedding_dim, res.rank, **opts)._load_factors(res)


class LowRankEmbeddingBag(_LowRankBase):
    """``nn.EmbeddingBag`` look-alike: pools rows of A (r dims), then multiplies by B once.

    Args:
        mode: "sum" or "mean" ("max" does not commute with B and is refused).
        include_last_offset: as in ``nn.EmbeddingBag``. Other args as :class:`LowRankEmbedding`.

    Example:
        >>> bag = LowRankEmbeddingBag(50, 8, 2, mode="sum")
        >>> bag(torch.tensor([1, 2, 3]), torch.tensor([0, 2])).shape
        torch.Size([2, 8])
    """

    def __init__(self, num_embeddings: int, embedding_dim: int, rank: int, *, mode: str = "mean",
                 include_last_offset: bool = False, **kwargs):
        check_mode(mode, type(self).__name__)
        super().__init__(num_embeddings, embedding_dim, rank, **kwargs)
        self.mode, self.include_last_offset = mode, bool(include_last_offset)

    def forward(self, input: Tensor, offsets: Optional[Tensor] = None,
                per_sample_weights: Optional[Tensor] = None) -> Tensor:  # noqa: D102
        pooled = F.embedding_bag(hash_indices(input, self.num_buckets), self.A, offsets, None, 2.0,
                                 self.scale_grad_by_freq, self.mode, self.sparse, per_sample_weights,
                                 self.include_last_offset, self.padding_idx)
        return pooled @ self.B

    def extra_repr(self) -> str:  # noqa: D102
        return super().extra_repr() + f", mode={self.mode!r}" + (", include_last_offset=True" if self.include_last_offset else "")

    @classmethod
    def from_embedding(cls, module: nn.EmbeddingBag, rank: Optional[int] = None, energy: Optional[float] = None,
                       chunk_rows: int = DEFAULT_CHUNK_ROWS) -> "LowRankEmbeddingBag":
        """Best rank-r factorisation of a trained ``nn.EmbeddingBag``/``HashedEmbeddingBag``.

        Raises:
            ConfigError: not an nn.EmbeddingBag, mode="max", ``max_norm`` set, bad rank/energy.
        """
        if isinstance(module, nn.EmbeddingBag):
            check_mode(module.mode, f"{cls.__name__}.from_embedding")
        res, opts = cls._factor(module, nn.EmbeddingBag, rank, energy, chunk_rows)
        return cls(module.num_embeddings, module.embedding_dim, res.rank, mode=module.mode,
                   include_last_offset=module.include_last_offset, **opts)._load_factors(res)


def to_low_rank(module: nn.Module, rank: Optional[int] = None, energy: Optional[float] = None,
                chunk_rows: int = DEFAULT_CHUNK_ROWS) -> _LowRankBase:
    """The low-rank twin of an ``nn.Embedding``/``nn.EmbeddingBag`` (hashed ones included).

    Example:
        >>> to_low_rank(nn.EmbeddingBag(30, 8, mode="sum"), energy=0.9).mode
        'sum'
    """
    if isinstance(module, nn.EmbeddingBag):
        return LowRankEmbeddingBag.from_embedding(module, rank=rank, energy=energy, chunk_rows=chunk_rows)
    if isinstance(module, nn.Embedding):
        return LowRankEmbedding.from_embedding(module, rank=rank, energy=energy, chunk_rows=chunk_rows)
    raise ConfigError(f"to_low_rank: {type(module).__name__} is not an nn.Embedding or nn.EmbeddingBag")


__all__ = ["LowRankEmbedding", "LowRankEmbeddingBag", "to_low_rank"]
