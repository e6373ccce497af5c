"""Metrics equal scikit-learn on random data with ties; frequency sets; degenerate cases."""

from __future__ import annotations

import numpy as np
import pytest

from mlet_compress.errors import DataError
from mlet_compress.metrics import evaluate, frequency_sets, log_loss, pr_auc, roc_auc

sk = pytest.importorskip("sklearn.metrics")


@pytest.mark.parametrize("seed", range(6))
def test_equal_to_sklearn_with_ties(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(50, 3000))
    y = (rng.random(n) < rng.uniform(0.05, 0.6)).astype(np.float32)
    levels = int(rng.integers(3, 40))  # few distinct values -> many ties
    scores = np.round(rng.random(n) * levels) / levels
    if seed % 2:
        scores = scores + 0.05 * y  # some signal
    probs = np.clip(rng.random(n), 1e-6, 1 - 1e-6)
    assert abs(roc_auc(y, scores) - sk.roc_auc_score(y, scores)) < 1e-12
    assert abs(pr_auc(y, scores) - sk.average_precision_score(y, scores)) < 1e-12
    assert abs(log_loss(y, probs) - sk.log_loss(y, probs)) < 1e-12
    cont = rng.standard_normal(n)
    assert abs(roc_auc(y, cont) - sk.roc_auc_score(y, cont)) < 1e-12
    assert abs(pr_auc(y, cont) - sk.average_precision_score(y, cont)) < 1e-12


def test_small_exact_values():
    assert roc_auc([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8]) == 0.75
    assert roc_auc([0, 1, 0, 1], [0.5, 0.5, 0.5, 0.5]) == 0.5  # all tied
    assert roc_auc([0, 1], [0.2, 0.2]) == 0.5
    assert pr_auc([0, 1, 1], [0.5, 0.5, 0.5]) == pytest.approx(2 / 3, abs=1e-15)
    assert log_loss([1, 0], [1.0, 0.0]) == pytest.approx(0.0, abs=1e-12)  # clipped, finite
    assert np.isfinite(log_loss([1], [0.0]))


def test_degenerate_single_class_is_nan():
    assert np.isnan(roc_auc([1, 1, 1], [0.1, 0.2, 0.3]))
    assert np.isnan(roc_auc([0, 0], [0.1, 0.2]))
    assert np.isnan(pr_auc([0, 0], [0.1, 0.2])) and np.isnan(pr_auc([1, 1], [0.1, 0.2]))
    assert np.isnan(roc_auc([], [])) and np.isnan(log_loss([], []))
    out = evaluate([1, 1, 1], [0.2, 0.4, 0.9])
    assert np.isnan(out["auc"]) and np.isnan(out["pr_auc"]) and out["n"] == 3 and out["ctr"] == 1.0


def test_validation_errors():
    with pytest.raises(DataError, match="equal length"):
        roc_auc([0, 1], [0.1])
    with pytest.raises(DataError, match="0 or 1"):
        roc_auc([0, 2], [0.1, 0.2])
    with pytest.raises(DataError, match="NaN"):
        pr_auc([0, 1], [0.1, np.nan])
    with pytest.raises(DataError, match="frac"):
        frequency_sets([1.0, 2.0], frac=0.7)


def test_frequency_sets_and_evaluate():
    rng = np.random.default_rng(0)
    n = 1005
    lf = rng.normal(size=n)
    lf[:10] = 0.0  # ties
    a, b = frequency_sets(lf, 0.1)
    assert len(a) == len(b) == 100 and np.all(np.diff(a) > 0) and np.all(np.diff(b) > 0)
    assert lf[a].min() >= np.sort(lf)[-100] and lf[b].max() <= np.sort(lf)[99]
    assert not set(a) & set(b)
    y = (rng.random(n) < 0.3).astype(float)
    p = np.clip(0.3 + 0.2 * (y - 0.3) + 0.1 * rng.standard_normal(n), 0.01, 0.99)
    out = evaluate(y, p, log_freq=lf)
    assert set(out) >= {"auc", "logloss", "pr_auc", "set_a", "set_b"}
    assert out["auc"] == pytest.approx(sk.roc_auc_score(y, p), abs=1e-12)
    assert out["set_a"]["n"] == 100 and out["set_b"]["ctr"] == pytest.approx(y[b].mean())
    assert out["set_b"]["pr_auc"] == pytest.approx(sk.average_precision_score(y[b], p[b]), abs=1e-12)
    assert out["set_a"]["auc"] == pytest.approx(sk.roc_auc_score(y[a], p[a]), abs=1e-12)
    with pytest.raises(DataError, match="log_freq"):
        evaluate(y, p, log_freq=lf[:-1])
    small_a, small_b = frequency_sets([5.0, 1.0, 3.0], 0.1)  # at least one sample per set
    assert small_a.tolist() == [0] and small_b.tolist() == [1]
