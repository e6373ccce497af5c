"""Embedding lookup modules: MLET factors, low-rank, quantized and hashed tables."""

from .hashed import HashedEmbedding, HashedEmbeddingBag
from .lowrank import LowRankEmbedding, LowRankEmbeddingBag
from .mlet import MLETEmbedding, MLETEmbeddingBag
from .quantized import QuantizedEmbedding, QuantizedEmbeddingBag

__all__ = [
    "MLETEmbedding", "MLETEmbeddingBag", "HashedEmbedding", "HashedEmbeddingBag",
    "LowRankEmbedding", "LowRankEmbeddingBag", "QuantizedEmbedding", "QuantizedEmbeddingBag",
]
