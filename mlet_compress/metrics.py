"""CTR quality metrics (numpy only): ROC-AUC, LogLoss, PR-AUC and the paper's frequency sets (§4.2).

* :func:`roc_auc` is exact and tie-aware (Mann-Whitney U with average ranks), equal to
  ``sklearn.metrics.roc_auc_score``.
* :func:`pr_auc` is the average precision computed exactly as ``sklearn.metrics.average_precision_score``
  (tied scores form one threshold; ``AP = Σ (R_n - R_{n-1}) P_n``, no interpolation).
* :func:`log_loss` clips probabilities to ``[eps, 1 - eps]`` (default: float64 machine epsilon, like
  sklearn's ``"auto"``).

A ranking metric of a single-class (or empty) set is undefined and returns ``nan`` without raising.
"""

from __future__ import annotations

import numpy as np

from .errors import DataError


def _prep(labels, scores, what: str) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(labels, dtype=np.float64).reshape(-1)
    s = np.asarray(scores, dtype=np.float64).reshape(-1)
    if y.shape != s.shape:
        raise DataError(f"{what}: labels have {y.shape[0]} entries but scores {s.shape[0]}; pass arrays of equal length")
    if y.size and not np.all((y == 0) | (y == 1)):
        bad = y[(y != 0) & (y != 1)][0]
        raise DataError(f"{what}: labels must be 0 or 1, found {bad!r}; binarise the labels first")
    if not np.all(np.isfinite(s)):
        raise DataError(f"{what}: scores contain NaN or Inf; check the model outputs")
    return y, s


def _average_ranks(s: np.ndarray) -> np.ndarray:
    """1-based ranks of ``s`` with ties given their average rank."""
    order = np.argsort(s, kind="mergesort")
    ss = s[order]
    starts = np.concatenate([[True], ss[1:] != ss[:-1]])
    group = np.cumsum(starts) - 1
    first = np.flatnonzero(starts)
    last = np.concatenate([first[1:], [len(ss)]]) - 1
    avg = (first + last) / 2.0 + 1.0
    ranks = np.empty(len(s), np.float64)
    ranks[order] = avg[group]
    return ranks


def roc_auc(labels, scores) -> float:
    """Area under the ROC curve, exact with ties (average ranks).

    Args:
        labels: 0/1 array ``[N]``.
        scores: real scores ``[N]`` (higher = more likely positive).

    Returns:
        The AUC, or ``nan`` when only one class is present.

    Raises:
        DataError: length mismatch, labels not 0/1, non-finite scores.

    Example:
        >>> roc_auc([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8])
        0.75
    """
    y, s = _prep(labels, scores, "roc_auc")
    n_pos = float(y.sum())
    n_neg = float(len(y) - n_pos)
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    r = _average_ranks(s)
    return float((r[y == 1].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def log_loss(labels, probs, eps: float | None = None) -> float:
    """Mean binary cross-entropy.

    Args:
        labels: 0/1 array ``[N]``.
        probs: predicted click probabilities ``[N]``.
        eps: clip probabilities to ``[eps, 1 - eps]``; None = float64 machine epsilon.

    Returns:
        The mean log loss (``nan`` for an empty input).

    Raises:
        DataError: length mismatch, labels not 0/1, non-finite probabilities.

    Example:
        >>> round(log_loss([0, 1], [0.5, 0.5]), 6)
        0.693147
    """
    y, p = _prep(labels, probs, "log_loss")
    if y.size == 0:
        return float("nan")
    e = np.finfo(np.float64).eps if eps is None else float(eps)
    p = np.clip(p, e, 1.0 - e)
    return float(-np.mean(y * np.log(p) + (1.0 - y) * np.log1p(-p)))


def pr_auc(labels, scores) -> float:
    """Average precision, identical to ``sklearn.metrics.average_precision_score``.

    Args:
        labels: 0/1 array ``[N]``.
        scores: real scores ``[N]``.

    Returns:
        ``Σ_n (R_n - R_{n-1}) P_n`` over the distinct score thresholds (descending), or ``nan`` when
        only one class is present.

    Raises:
        DataError: length mismatch, labels not 0/1, non-finite scores.

    Example:
        >>> round(pr_auc([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8]), 6)
        0.833333
    """
    y, s = _prep(labels, scores, "pr_auc")
    n_pos = y.sum()
    if n_pos == 0 or n_pos == len(y):
        return float("nan")
    order = np.argsort(s, kind="mergesort")[::-1]
    s, y = s[order], y[order]
    last = np.concatenate([np.flatnonzero(np.diff(s)), [len(y) - 1]])
    tps = np.cumsum(y)[last]
    fps = 1 + last - tps
    precision = tps / (tps + fps)
    recall = tps / tps[-1]
    return float(np.sum(np.diff(np.concatenate([[0.0], recall])) * precision))


def frequency_sets(log_freq, frac: float = 0.1) -> tuple[np.ndarray, np.ndarray]:
    """Indices of the most (set A) and least (set B) frequent samples (paper §4.2).

    The samples are ordered by ``log_freq`` (see ``mlet_compress.data.sample_log_frequency``) with a
    stable sort (ties keep index order); ``k = max(1, floor(frac * N))`` samples go in each set.

    Args:
        log_freq: ``[N]`` per-sample log frequency.
        frac: fraction of samples per set, in ``(0, 0.5]``.

    Returns:
        ``(idx_A, idx_B)``: sorted int64 index arrays (A = highest log_freq, B = lowest).

    Raises:
        DataError: ``frac`` out of range, non-finite or non-1-D ``log_freq``.

    Example:
        >>> frequency_sets([3.0, 1.0, 2.0, 0.0], frac=0.25)
        (array([0]), array([3]))
    """
    lf = np.asarray(log_freq, dtype=np.float64)
    if lf.ndim != 1 or not np.all(np.isfinite(lf)):
        raise DataError(f"frequency_sets: log_freq must be a finite 1-D array, got shape {lf.shape}")
    if not 0.0 < frac <= 0.5:
        raise DataError(f"frequency_sets: frac={frac} must be in (0, 0.5]")
    n = len(lf)
    if n == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    k = max(1, int(np.floor(frac * n)))
    order = np.argsort(lf, kind="stable")
    return np.sort(order[n - k:]).astype(np.int64), np.sort(order[:k]).astype(np.int64)


def _set_metrics(y: np.ndarray, p: np.ndarray) -> dict:
    return {"auc": roc_auc(y, p), "pr_auc": pr_auc(y, p), "logloss": log_loss(y, p), "n": int(len(y)),
            "ctr": float(y.mean()) if len(y) else float("nan")}


def evaluate(labels, probs, log_freq=None, *, frac: float = 0.1) -> dict:
    """All metrics at once.

    Args:
        labels: 0/1 array ``[N]``.
        probs: predicted click probabilities ``[N]``.
        log_freq: optional ``[N]`` per-sample log frequency; adds the §4.2 sets.
        frac: fraction of samples in each frequency set.

    Returns:
        ``{"auc", "logloss", "pr_auc", "n", "ctr"}`` and, with ``log_freq``, ``"set_a"`` (most frequent)
        and ``"set_b"`` (least frequent), each ``{"auc", "pr_auc", "logloss", "n", "ctr"}``.

    Raises:
        DataError: as the individual metrics, or ``log_freq`` of another length.

    Example:
        >>> sorted(evaluate([0, 1, 1, 0], [0.2, 0.7, 0.6, 0.4]))
        ['auc', 'ctr', 'logloss', 'n', 'pr_auc']
    """
    y, p = _prep(labels, probs, "evaluate")
    out = _set_metrics(y, p)
    if log_freq is not None:
        lf = np.asarray(log_freq, dtype=np.float64).reshape(-1)
        if len(lf) != len(y):
            raise DataError(f"evaluate: log_freq has {len(lf)} entries but labels {len(y)}; pass one per sample")
        a, b = frequency_sets(lf, frac)
        out["set_a"] = _set_metrics(y[a], p[a])
        out["set_b"] = _set_metrics(y[b], p[b])
    return out


__all__ = ["roc_auc", "log_loss", "pr_auc", "frequency_sets", "evaluate"]
