"""Deep & Cross Network (Wang et al., 2017) as DeepCTR-Torch's ``DCN`` (vector cross parameterisation).

x0 = cat(embeddings, dense); logit = dnn_linear(cat(CrossNet(x0), DNN(x0))) + bias. No linear part.

Example:
    >>> m = DCN([10, 20], num_dense=1, embed_dim=4, dnn_hidden_units=(8,))
    >>> m(torch.randn(2, 1), torch.zeros(2, 2, dtype=torch.long)).shape
    torch.Size([2])
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from mlet_compress.errors import ConfigError
from mlet_compress.models.base import DeepCTRModel, check_nonneg, deep_input
from mlet_compress.models.embedding import is_int
from mlet_compress.models.layers import MLP, CrossNet


class DCN(DeepCTRModel):
    """DCN with DeepCTR-Torch 0.2.9 defaults.

    Args:
        vocab_sizes: rows per sparse field.
        num_dense: number of dense features (0 allowed).
        embed_dim: embedding dimension d.
        field_names: optional sparse field names (table keys).
        cross_num: number of cross layers (default 2).
        dnn_hidden_units: DNN layer sizes (DeepCTR default (128, 128)).
        l2_reg_embedding: L2 on the looked-up embeddings (see :mod:`mlet_compress.models.base`).
        l2_reg_cross: L2 on the cross kernels (whole, once per step), DeepCTR default 1e-5.
        init_std: N(0, init_std) init of embeddings and DNN weights.
        dnn_dropout: DNN dropout rate.
        dnn_use_bn: BatchNorm in the DNN.
        sparse: create tables with sparse gradients.

    Raises:
        ConfigError: invalid sizes or coefficients.
    """

    name = "dcn"

    def __init__(
        self,
        vocab_sizes: Sequence[int],
        num_dense: int,
        embed_dim: int = 16,
        *,
        field_names: Sequence[str] | None = None,
        cross_num: int = 2,
        dnn_hidden_units: Sequence[int] = (128, 128),
        l2_reg_embedding: float = 1e-5,
        l2_reg_cross: float = 1e-5,
        init_std: float = 1e-4,
        dnn_dropout: float = 0.0,
        dnn_use_bn: bool = False,
        sparse: bool = False,
    ) -> None:
        super().__init__()
        self._record_config(locals())
        if not is_int(cross_num) or cross_num < 1:
            raise ConfigError(f"cross_num = {cross_num!r} must be a positive int")
        check_nonneg("l2_reg_cross", l2_reg_cross)
        self.l2_reg_cross = float(l2_reg_cross)
        self._setup(vocab_sizes, num_dense, embed_dim, field_names, sparse=sparse, init_std=init_std,
                    l2_reg_embedding=l2_reg_embedding, l2_reg_linear=None)
        in_dim = self.deep_input_dim
        self.crossnet = CrossNet(in_dim, cross_num)
        self.dnn = MLP(in_dim, dnn_hidden_units, dropout=dnn_dropout, use_bn=dnn_use_bn, init_std=init_std)
        self.dnn_linear = nn.Linear(in_dim + self.dnn.out_dim, 1, bias=False)

    def _cross_sq(self) -> torch.Tensor:
        return sum(k.pow(2).sum() for k in self.crossnet.kernels)  # type: ignore[return-value]

    def forward(self, dense: torch.Tensor, sparse: torch.Tensor) -> torch.Tensor:
        """dense [B, num_dense], sparse [B, F] -> logits [B]."""
        emb, dense, lin = self._inputs(dense, sparse)
        x0 = deep_input(emb, dense)
        logit = self.dnn_linear(torch.cat([self.crossnet(x0), self.dnn(x0)], dim=1)).squeeze(1)
        return self._finish(logit, emb, lin, (self.l2_reg_cross, self._cross_sq))


__all__ = ["DCN"]
