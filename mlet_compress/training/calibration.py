"""Post-hoc temperature scaling: one temperature T fitted on the validation split, applied as ``sigmoid(z / T)``.

MLET models can become over-confident after their best epochs (a good AUC with a poor LogLoss). Dividing
every logit by one positive temperature changes no ranking (AUC, PR-AUC and the Set A/B AUCs stay the
same) and, fitted by minimising the validation LogLoss, repairs the probabilities. :func:`fit_temperature`
is the pure math (float64 numpy); :func:`calibrate` fits it for a model on a split; ``train(...,
calibrate=True)`` stores the result in the checkpoint metadata (``extra["calibration"]``) and
:func:`~mlet_compress.training.evaluate.evaluate_checkpoint` applies it.

Example:
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> z = rng.normal(0, 2, 20000)
    >>> y = (rng.random(20000) < 1 / (1 + np.exp(-z))).astype(float)
    >>> round(fit_temperature(4 * z, y), 1)                 # logits 4x too confident -> T close to 4
    4.0
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from torch import nn

from ..errors import DataError
from ..metrics import log_loss
from .predict import TensorData, predict_logits

#: The temperature is searched in [1 / MAX_SCALE, MAX_SCALE] (beyond that the model carries no usable signal).
MAX_SCALE = 1e3


def _grad_hess(z: np.ndarray, y: np.ndarray, s: float) -> tuple[float, float]:
    """d/ds and d²/ds² of the mean BCE of ``sigmoid(s z)`` (convex in the inverse temperature ``s``)."""
    p = 0.5 * (1.0 + np.tanh(0.5 * s * z))
    return float(np.mean((p - y) * z)), float(np.mean(p * (1.0 - p) * z * z))


def fit_temperature(logits: Any, labels: Any, *, tol: float = 1e-12, max_iter: int = 200) -> float:
    """The temperature T > 0 that minimises the mean LogLoss of ``sigmoid(logits / T)`` (float64).

    The loss is convex in ``s = 1/T``, so a Newton iteration safeguarded by bisection on the sign of the
    derivative finds the global minimum; T is clamped to ``[1/MAX_SCALE, MAX_SCALE]`` (a model whose
    validation logits rank worse than chance gets the largest T, i.e. probabilities near 0.5).

    Args:
        logits: ``[N]`` real logits.
        labels: ``[N]`` 0/1 labels.
        tol: stop when the bracket or the Newton step is below ``tol`` relative to ``s``.
        max_iter: iteration cap.

    Returns:
        The temperature (1.0 leaves the model unchanged).

    Raises:
        DataError: empty input, length mismatch, labels not 0/1, non-finite logits.
    """
    z = np.asarray(logits, dtype=np.float64).reshape(-1)
    y = np.asarray(labels, dtype=np.float64).reshape(-1)
    if z.size == 0 or z.shape != y.shape:
        raise DataError(f"fit_temperature: need equal, non-empty logits and labels, got {z.size} and {y.size}")
    if not np.all(np.isfinite(z)):
        raise DataError("fit_temperature: logits contain NaN or Inf; check the model outputs")
    if not np.all((y == 0) | (y == 1)):
        raise DataError("fit_temperature: labels must be 0 or 1")
    lo, hi = 1.0 / MAX_SCALE, MAX_SCALE
    if _grad_hess(z, y, lo)[0] >= 0:
        return 1.0 / lo
    if _grad_hess(z, y, hi)[0] <= 0:
        return 1.0 / hi
    s = 1.0
    for _ in range(max_iter):
        g, h = _grad_hess(z, y, s)
        if g > 0:
            hi = s
        else:
            lo = s
        step = g / h if h > 0 else math.inf
        cand = s - step
        if not lo < cand < hi:  # Newton left the bracket: bisect (geometric mean: s spans decades)
            cand = math.sqrt(lo * hi)
        if abs(cand - s) <= tol * s or (hi - lo) <= tol * s:
            s = cand
            break
        s = cand
    return 1.0 / s


def scaled_probs(logits: np.ndarray, temperature: float) -> np.ndarray:
    """``sigmoid(logits / temperature)`` in float64."""
    return 0.5 * (1.0 + np.tanh(0.5 * np.asarray(logits, dtype=np.float64) / float(temperature)))


def calibrate(model: nn.Module, val: TensorData, batch_size: int, device: torch.device) -> dict[str, float]:
    """Fit the temperature of ``model`` on the validation split ``val``.

    Args:
        model: the trained model (any of its forms: MLET, collapsed, compressed).
        val: the validation split.
        batch_size / device: inference batch and device.

    Returns:
        ``{"temperature", "val_logloss_raw", "val_logloss"}`` (what ``extra["calibration"]`` stores).

    Raises:
        DataError: an empty validation split (nothing to fit on).
    """
    if not len(val):
        raise DataError("calibration needs validation rows; the validation split is empty")
    z = predict_logits(model, val, batch_size, device)
    y = val.labels.numpy().astype(np.float64)
    t = fit_temperature(z, y)
    return {"temperature": t, "val_logloss_raw": log_loss(y, scaled_probs(z, 1.0)),
            "val_logloss": log_loss(y, scaled_probs(z, t))}


__all__ = ["fit_temperature", "predict_logits", "scaled_probs", "calibrate", "MAX_SCALE"]
