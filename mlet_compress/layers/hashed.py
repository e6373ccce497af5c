"""Modulo-hashed plain embedding tables: ``weight[idx % num_buckets]``.

They are ``nn.Embedding`` / ``nn.EmbeddingBag`` subclasses whose table has ``num_buckets`` rows, so
their state-dict keys (``<name>.weight``) are the plain ones. The modulus is the row count.
"""

from __future__ import annotations

from typing import Optional

import torch  # noqa: F401  (used by the doctest examples)
from torch import Tensor, nn

from ..ops.hashing import hash_indices


class HashedEmbedding(nn.Embedding):
    """An ``nn.Embedding`` of ``num_buckets`` rows that looks up ``idx % num_buckets``.

    Args:
        num_buckets: rows of the stored table (the hash modulus).
        embedding_dim: width of each row.
        original_num_embeddings: size of the index space before hashing (kept for inspection).
        **kwargs: any ``nn.Embedding`` option (``padding_idx`` refers to a bucket).

    Example:
        >>> emb = HashedEmbedding(10, 4, original_num_embeddings=100)
        >>> emb(torch.tensor([3, 13])).shape
        torch.Size([2, 4])
    """

    def __init__(self, num_buckets: int, embedding_dim: int, *, original_num_embeddings: Optional[int] = None, **kwargs):
        super().__init__(num_buckets, embedding_dim, **kwargs)
        self.num_buckets = num_buckets
        self.original_num_embeddings = original_num_embeddings or num_buckets

    def forward(self, input: Tensor) -> Tensor:  # noqa: D102
        return super().forward(hash_indices(input, self.num_buckets))

    def extra_repr(self) -> str:  # noqa: D102
        return super().extra_repr() + f", hashed_from={self.original_num_embeddings}"


class HashedEmbeddingBag(nn.EmbeddingBag):
    """An ``nn.EmbeddingBag`` of ``num_buckets`` rows that pools ``weight[idx % num_buckets]``."""

    def __init__(self, num_buckets: int, embedding_dim: int, *, original_num_embeddings: Optional[int] = None, **kwargs):
        super().__init__(num_buckets, embedding_dim, **kwargs)
        self.num_buckets = num_buckets
        self.original_num_embeddings = original_num_embeddings or num_buckets

    def forward(self, input: Tensor, offsets: Optional[Tensor] = None, per_sample_weights: Optional[Tensor] = None) -> Tensor:  # noqa: D102
        return super().forward(hash_indices(input, self.num_buckets), offsets, per_sample_weights)

    def extra_repr(self) -> str:  # noqa: D102
        return super().extra_repr() + f", hashed_from={self.original_num_embeddings}"
