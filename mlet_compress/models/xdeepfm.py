"""xDeepFM (Lian et al., 2018) as DeepCTR-Torch's ``xDeepFM``.

logit = linear part + cin_linear(CIN(embeddings)) + dnn_linear(DNN(cat(embeddings, dense))) + bias.

Example:
    >>> m = XDeepFM([10, 20], num_dense=1, embed_dim=4, dnn_hidden_units=(8,), cin_layer_size=(4, 2))
    >>> m(torch.randn(2, 1), torch.zeros(2, 2, dtype=torch.long)).shape
    torch.Size([2])
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from mlet_compress.models.base import DeepCTRModel, deep_input
from mlet_compress.models.layers import CIN, MLP


class XDeepFM(DeepCTRModel):
    """xDeepFM with DeepCTR-Torch 0.2.9 defaults.

    Args:
        vocab_sizes: rows per sparse field.
        num_dense: number of dense features (0 allowed).
        embed_dim: embedding dimension d.
        field_names: optional sparse field names (table keys).
        dnn_hidden_units: DNN layer sizes (DeepCTR default (256, 256)).
        cin_layer_size: CIN feature maps per layer (DeepCTR default (256, 128)).
        cin_split_half: feed half of each non-final CIN layer forward, half to the output.
        l2_reg_linear: L2 on the looked-up first-order weights and the dense weight.
        l2_reg_embedding: L2 on the looked-up embeddings (see :mod:`mlet_compress.models.base`).
        init_std: N(0, init_std) init of embeddings, first-order weights and DNN weights.
        dnn_dropout: DNN dropout rate.
        dnn_use_bn: BatchNorm in the DNN.
        sparse: create tables with sparse gradients.

    Raises:
        ConfigError: invalid sizes (odd non-final CIN size with split_half) or coefficients.
    """

    name = "xdeepfm"

    def __init__(
        self,
        vocab_sizes: Sequence[int],
        num_dense: int,
        embed_dim: int = 16,
        *,
        field_names: Sequence[str] | None = None,
        dnn_hidden_units: Sequence[int] = (256, 256),
        cin_layer_size: Sequence[int] = (256, 128),
        cin_split_half: bool = True,
        l2_reg_linear: float = 1e-5,
        l2_reg_embedding: float = 1e-5,
        init_std: float = 1e-4,
        dnn_dropout: float = 0.0,
        dnn_use_bn: bool = False,
        sparse: bool = False,
    ) -> None:
        super().__init__()
        self._record_config(locals())
        self._setup(vocab_sizes, num_dense, embed_dim, field_names, sparse=sparse, init_std=init_std,
                    l2_reg_embedding=l2_reg_embedding, l2_reg_linear=l2_reg_linear)
        self.dnn = MLP(self.deep_input_dim, dnn_hidden_units, dropout=dnn_dropout, use_bn=dnn_use_bn,
                       init_std=init_std)
        self.dnn_linear = nn.Linear(self.dnn.out_dim, 1, bias=False)
        self.cin = CIN(self.num_fields, cin_layer_size, split_half=cin_split_half)
        self.cin_linear = nn.Linear(self.cin.out_dim, 1, bias=False)

    def forward(self, dense: torch.Tensor, sparse: torch.Tensor) -> torch.Tensor:
        """dense [B, num_dense], sparse [B, F] -> logits [B]."""
        emb, dense, lin = self._inputs(dense, sparse)
        cin_logit = self.cin_linear(self.cin(emb)).squeeze(1)
        dnn_logit = self.dnn_linear(self.dnn(deep_input(emb, dense))).squeeze(1)
        return self._finish(cin_logit + dnn_logit, emb, lin)


__all__ = ["XDeepFM"]
