"""DLRM (Naumov et al., 2019) with the dot interaction, as configured in the MLET paper §4.

dense [B, n] -> bottom MLP (ReLU everywhere) -> x [B, d]; the field embeddings e_1..e_F [B, d];
pairwise dot products of (x, e_1, .., e_F), strictly-lower triangle; top MLP over cat(x, dots) -> logit.
With ``num_dense == 0`` there is no bottom MLP and the interaction runs over the embeddings only
(top MLP input = the F(F-1)/2 dots). Initialisation follows the DLRM reference: tables U(±sqrt(1/n)),
MLP weights N(0, sqrt(2/(in+out))), biases N(0, sqrt(1/out)).

Example:
    >>> m = DLRM([10, 20, 30], num_dense=4, embed_dim=8, bottom_mlp=(16,), top_mlp=(16,))
    >>> m(torch.randn(2, 4), torch.zeros(2, 3, dtype=torch.long)).shape
    torch.Size([2])
"""

from __future__ import annotations

from typing import Sequence

import torch

from mlet_compress.errors import ConfigError
from mlet_compress.models.base import CTRModel, check_common, check_nonneg, sq_sum
from mlet_compress.models.embedding import FeatureEmbedding
from mlet_compress.models.interactions import dot_interaction
from mlet_compress.models.layers import MLP, check_units


class DLRM(CTRModel):
    """DLRM with dot interaction (paper defaults: criteo bottom 512-256-128-d, top 512-256-1).

    Args:
        vocab_sizes: rows per sparse field.
        num_dense: number of dense features (0: no bottom MLP).
        embed_dim: embedding dimension d (also the bottom MLP's output width).
        field_names: optional sparse field names (table keys).
        bottom_mlp: hidden sizes of the bottom MLP before its final layer to d
            (paper: (512, 256, 128) on Criteo, (256, 128) on Avazu).
        top_mlp: hidden sizes of the top MLP before its final layer to 1.
        sparse: create embedding tables with sparse gradients.
        l2_reg_embedding: L2 on looked-up embeddings (DLRM reference: none).

    Raises:
        ConfigError: invalid sizes, or ``num_dense == 0`` with fewer than 2 fields (no interaction).
    """

    name = "dlrm"

    def __init__(
        self,
        vocab_sizes: Sequence[int],
        num_dense: int,
        embed_dim: int = 16,
        *,
        field_names: Sequence[str] | None = None,
        bottom_mlp: Sequence[int] = (512, 256, 128),
        top_mlp: Sequence[int] = (512, 256),
        sparse: bool = False,
        l2_reg_embedding: float = 0.0,
    ) -> None:
        super().__init__()
        self._record_config(locals())
        check_common(num_dense, embed_dim, 1.0)
        check_nonneg("l2_reg_embedding", l2_reg_embedding)
        bottom = check_units("bottom_mlp", bottom_mlp, allow_empty=True)
        top = check_units("top_mlp", top_mlp, allow_empty=True)
        self.num_dense = num_dense = int(num_dense)
        self.l2_reg_embedding = float(l2_reg_embedding)
        self.embedding = FeatureEmbedding(vocab_sizes, embed_dim, field_names, sparse=sparse, init="dlrm")
        num_fields = self.embedding.num_fields
        if num_dense > 0:
            self.bottom_mlp = MLP(num_dense, bottom + [embed_dim], init="dlrm")
            n_vec = num_fields + 1
            top_in = embed_dim + n_vec * (n_vec - 1) // 2
        else:
            if num_fields < 2:
                raise ConfigError(
                    f"dlrm with num_dense=0 and {num_fields} sparse field has no pairwise interaction; "
                    "give >= 2 sparse fields or some dense features"
                )
            self.bottom_mlp = None
            top_in = num_fields * (num_fields - 1) // 2
        self.top_mlp = MLP(top_in, top + [1], init="dlrm", activate_last=False)

    def forward(self, dense: torch.Tensor, sparse: torch.Tensor) -> torch.Tensor:
        """dense [B, num_dense], sparse [B, F] -> logits [B]."""
        self._check_inputs(dense, sparse, self.embedding.num_fields)
        emb = self.embedding(sparse)  # [B, F, d]
        if self.bottom_mlp is not None:
            x = self.bottom_mlp(dense.to(emb.dtype))  # [B, d]
            z = dot_interaction(torch.cat([x.unsqueeze(1), emb], dim=1))
            r = torch.cat([x, z], dim=1)
        else:
            r = dot_interaction(emb)
        logits = self.top_mlp(r).squeeze(1)
        self._store_reg(logits, (self.l2_reg_embedding, sq_sum(emb)))
        return logits


__all__ = ["DLRM"]
