"""NFM (He & Chua, 2017) as DeepCTR-Torch's ``NFM``.

logit = first order (LinearFeatures) + dnn_linear(DNN(cat(BiInteraction(embeddings), dense))) + bias,
BiInteraction(v) = 0.5 ((Σ_f v)² − Σ_f v²) ∈ R^d, optionally dropped out (``bi_dropout``, default 0).

Example:
    >>> m = NFM([10, 20], num_dense=1, embed_dim=4, dnn_hidden_units=(8,))
    >>> m(torch.randn(2, 1), torch.zeros(2, 2, dtype=torch.long)).shape
    torch.Size([2])
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from mlet_compress.errors import ConfigError
from mlet_compress.models.base import DeepCTRModel
from mlet_compress.models.interactions import bi_interaction
from mlet_compress.models.layers import MLP


class NFM(DeepCTRModel):
    """NFM with DeepCTR-Torch 0.2.9 defaults.

    Args:
        vocab_sizes: rows per sparse field.
        num_dense: number of dense features (0 allowed).
        embed_dim: embedding dimension d.
        field_names: optional sparse field names (table keys).
        dnn_hidden_units: DNN layer sizes (DeepCTR default (128, 128)).
        l2_reg_embedding: L2 on the looked-up embeddings (see :mod:`mlet_compress.models.base`).
        l2_reg_linear: L2 on the looked-up first-order weights and the dense weight.
        init_std: N(0, init_std) init of embeddings, first-order weights and DNN weights.
        bi_dropout: dropout on the bi-interaction output (DeepCTR default 0).
        dnn_dropout: DNN dropout rate.
        dnn_use_bn: BatchNorm in the DNN.
        sparse: create tables with sparse gradients.

    Raises:
        ConfigError: invalid sizes, rates or coefficients.
    """

    name = "nfm"

    def __init__(
        self,
        vocab_sizes: Sequence[int],
        num_dense: int,
        embed_dim: int = 16,
        *,
        field_names: Sequence[str] | None = None,
        dnn_hidden_units: Sequence[int] = (128, 128),
        l2_reg_embedding: float = 1e-5,
        l2_reg_linear: float = 1e-5,
        init_std: float = 1e-4,
        bi_dropout: float = 0.0,
        dnn_dropout: float = 0.0,
        dnn_use_bn: bool = False,
        sparse: bool = False,
    ) -> None:
        super().__init__()
        self._record_config(locals())
        if not 0.0 <= bi_dropout < 1.0:
            raise ConfigError(f"bi_dropout = {bi_dropout!r} must be in [0, 1)")
        self._setup(vocab_sizes, num_dense, embed_dim, field_names, sparse=sparse, init_std=init_std,
                    l2_reg_embedding=l2_reg_embedding, l2_reg_linear=l2_reg_linear)
        self.bi_dropout = nn.Dropout(bi_dropout)
        in_dim = self.embedding.embed_dim + self.num_dense
        self.dnn = MLP(in_dim, dnn_hidden_units, dropout=dnn_dropout, use_bn=dnn_use_bn, init_std=init_std)
        self.dnn_linear = nn.Linear(self.dnn.out_dim, 1, bias=False)

    def forward(self, dense: torch.Tensor, sparse: torch.Tensor) -> torch.Tensor:
        """dense [B, num_dense], sparse [B, F] -> logits [B]."""
        emb, dense, lin = self._inputs(dense, sparse)
        bi = self.bi_dropout(bi_interaction(emb))  # [B, d]
        logit = self.dnn_linear(self.dnn(torch.cat([bi, dense], dim=1))).squeeze(1)
        return self._finish(logit, emb, lin)


__all__ = ["NFM"]
