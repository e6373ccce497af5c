"""AutoInt (Song et al., 2019) as DeepCTR-Torch's ``AutoInt``.

Interacting layers (multi-head self-attention over the field embeddings, residual, ReLU) and a DNN
over cat(embeddings, dense); logit = dnn_linear(cat(flatten(attention out), DNN out)) + bias.
No linear part.

Example:
    >>> m = AutoInt([10, 20], num_dense=1, embed_dim=4, dnn_hidden_units=(8,), att_embedding_size=2)
    >>> m(torch.randn(2, 1), torch.zeros(2, 2, dtype=torch.long)).shape
    torch.Size([2])
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from mlet_compress.errors import ConfigError
from mlet_compress.models.base import DeepCTRModel, deep_input
from mlet_compress.models.embedding import is_int
from mlet_compress.models.layers import MLP, InteractingLayer, check_units


class AutoInt(DeepCTRModel):
    """AutoInt with DeepCTR-Torch 0.2.9 defaults (3 layers, 2 heads of size 8, residual).

    Args:
        vocab_sizes: rows per sparse field.
        num_dense: number of dense features (0 allowed).
        embed_dim: embedding dimension d.
        field_names: optional sparse field names (table keys).
        att_layer_num: number of interacting layers.
        att_embedding_size: size of each attention head.
        att_head_num: number of heads.
        att_res: residual connection in each interacting layer.
        dnn_hidden_units: DNN layer sizes (DeepCTR default (256, 128)).
        l2_reg_embedding: L2 on the looked-up embeddings (see :mod:`mlet_compress.models.base`).
        init_std: N(0, init_std) init of embeddings and DNN weights.
        dnn_dropout: DNN dropout rate.
        dnn_use_bn: BatchNorm in the DNN.
        sparse: create tables with sparse gradients.

    Raises:
        ConfigError: invalid sizes or coefficients.
    """

    name = "autoint"

    def __init__(
        self,
        vocab_sizes: Sequence[int],
        num_dense: int,
        embed_dim: int = 16,
        *,
        field_names: Sequence[str] | None = None,
        att_layer_num: int = 3,
        att_embedding_size: int = 8,
        att_head_num: int = 2,
        att_res: bool = True,
        dnn_hidden_units: Sequence[int] = (256, 128),
        l2_reg_embedding: float = 1e-5,
        init_std: float = 1e-4,
        dnn_dropout: float = 0.0,
        dnn_use_bn: bool = False,
        sparse: bool = False,
    ) -> None:
        super().__init__()
        self._record_config(locals())
        if not is_int(att_layer_num) or att_layer_num < 1:
            raise ConfigError(f"att_layer_num = {att_layer_num!r} must be a positive int")
        self._setup(vocab_sizes, num_dense, embed_dim, field_names, sparse=sparse, init_std=init_std,
                    l2_reg_embedding=l2_reg_embedding, l2_reg_linear=None)
        att_embedding_size, att_head_num = check_units("att_embedding_size / att_head_num",
                                                       (att_embedding_size, att_head_num))
        att_out = att_embedding_size * att_head_num
        self.int_layers = nn.ModuleList(
            InteractingLayer(in_dim, att_embedding_size, att_head_num, att_res)
            for in_dim in [self.embedding.embed_dim] + [att_out] * (att_layer_num - 1)
        )
        self.dnn = MLP(self.deep_input_dim, dnn_hidden_units, dropout=dnn_dropout, use_bn=dnn_use_bn,
                       init_std=init_std)
        self.dnn_linear = nn.Linear(self.num_fields * att_out + self.dnn.out_dim, 1, bias=False)

    def forward(self, dense: torch.Tensor, sparse: torch.Tensor) -> torch.Tensor:
        """dense [B, num_dense], sparse [B, F] -> logits [B]."""
        emb, dense, lin = self._inputs(dense, sparse)
        att = emb
        for layer in self.int_layers:
            att = layer(att)
        deep = self.dnn(deep_input(emb, dense))
        logit = self.dnn_linear(torch.cat([att.flatten(1), deep], dim=1)).squeeze(1)
        return self._finish(logit, emb, lin)


__all__ = ["AutoInt"]
