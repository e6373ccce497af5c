"""DeepFM (Guo et al., 2017) as DeepCTR-Torch's ``DeepFM``: Wide & Deep plus the FM second-order term.

logit = first order (LinearFeatures) + FM second order 0.5 Σ_d((Σ_f v)² − Σ_f v²)
        + dnn_linear(DNN(cat(embeddings, dense))) + bias.

Example:
    >>> m = DeepFM([10, 20], num_dense=1, embed_dim=4, dnn_hidden_units=(8,))
    >>> m(torch.randn(2, 1), torch.zeros(2, 2, dtype=torch.long)).shape
    torch.Size([2])
"""

from __future__ import annotations

import torch

from mlet_compress.models.base import deep_input
from mlet_compress.models.interactions import fm_cross_term
from mlet_compress.models.wdl import WDL


class DeepFM(WDL):
    """DeepFM with DeepCTR-Torch 0.2.9 defaults (``use_fm=True``).

    Same constructor arguments and defaults as :class:`~mlet_compress.models.wdl.WDL` (first-order part,
    DNN (256, 128), L2 1e-5 on looked-up embeddings and first-order weights, N(0, 1e-4) init); the
    forward adds the FM second-order interaction of the field embeddings.
    """

    name = "deepfm"

    def forward(self, dense: torch.Tensor, sparse: torch.Tensor) -> torch.Tensor:
        """dense [B, num_dense], sparse [B, F] -> logits [B]."""
        emb, dense, lin = self._inputs(dense, sparse)
        logit = fm_cross_term(emb) + self.dnn_linear(self.dnn(deep_input(emb, dense))).squeeze(1)
        return self._finish(logit, emb, lin)
