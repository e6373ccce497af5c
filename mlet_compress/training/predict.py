"""Splits as torch tensors and batched inference (shared by the loop, ``train`` and ``evaluate_checkpoint``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn


@dataclass
class TensorData:
    """A split held as torch tensors (CPU) for fast batch indexing."""

    dense: torch.Tensor
    sparse: torch.Tensor
    labels: torch.Tensor

    @classmethod
    def from_tabular(cls, data: Any) -> "TensorData":
        """Convert a ``TabularData`` (numpy arrays) without copying where possible."""
        dense = torch.from_numpy(np.ascontiguousarray(data.dense, dtype=np.float32))
        if dense.dim() == 1:
            dense = dense.reshape(len(data.labels), -1)
        sparse = torch.from_numpy(np.ascontiguousarray(data.sparse, dtype=np.int64))
        labels = torch.from_numpy(np.ascontiguousarray(data.labels, dtype=np.float32))
        return cls(dense, sparse, labels)

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def batch(self, idx: torch.Tensor, device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Rows ``idx`` as ``(dense, sparse, labels)`` on ``device``."""
        return (self.dense[idx].to(device, non_blocking=True), self.sparse[idx].to(device, non_blocking=True),
                self.labels[idx].to(device, non_blocking=True))


def unwrap(model: nn.Module) -> nn.Module:
    """The module inside a ``DistributedDataParallel`` wrapper (the model itself otherwise)."""
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


@torch.no_grad()
def predict_logits(model: nn.Module, data: TensorData, batch_size: int, device: torch.device) -> np.ndarray:
    """The model's logits (float64 numpy of the float32 logits) for every row of ``data``, in order, in eval mode.

    Example:
        >>> # z = predict_logits(model, TensorData.from_tabular(splits.val), 4096, torch.device("cpu"))
    """
    m = unwrap(model)
    was_training = m.training
    m.eval()
    out = []
    try:
        for start in range(0, len(data), batch_size):
            sl = slice(start, start + batch_size)
            out.append(m(data.dense[sl].to(device), data.sparse[sl].to(device)).float().reshape(-1).cpu().double())
    finally:
        m.train(was_training)
    return torch.cat(out).numpy() if out else np.zeros(0, dtype=np.float64)


def predict(model: nn.Module, data: TensorData, batch_size: int, device: torch.device) -> np.ndarray:
    """Click probabilities (float64 numpy) of every row of ``data``, in order, in eval mode: the sigmoid of
    :func:`predict_logits`, taken in float32 as the model computes it.

    Example:
        >>> # probs = predict(model, TensorData.from_tabular(splits.test), 4096, torch.device("cpu"))
    """
    z = torch.from_numpy(predict_logits(model, data, batch_size, device)).float()  # exact: float32 logits
    return torch.sigmoid(z).double().numpy()


__all__ = ["TensorData", "predict", "predict_logits", "unwrap"]
