"""EmbeddingBag input conventions shared by every pooled lookup (ours and FBGEMM's)."""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor


def bag_offsets(input: Tensor, offsets: Optional[Tensor]) -> tuple[Tensor, Optional[Tensor]]:
    """Normalise EmbeddingBag inputs exactly like ``F.embedding_bag``: 2-D input means fixed-size bags."""
    if input.dim() == 2:
        if offsets is not None:
            raise ValueError("offsets has to be None if input is 2D")
        b, length = input.shape
        offsets = torch.arange(0, b * length, length, device=input.device, dtype=input.dtype)
        return input.reshape(-1), offsets
    if input.dim() != 1:
        raise ValueError(f"input has to be 1D or 2D Tensor, but got Tensor of dimension {input.dim()}")
    if offsets is None:
        raise ValueError("offsets has to be a 1D Tensor but got None")
    return input, offsets


__all__ = ["bag_offsets"]
