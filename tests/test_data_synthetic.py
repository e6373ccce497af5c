"""Synthetic generator: determinism, chunking, Zipf long tail, calibrated CTR and Bayes AUC."""

from __future__ import annotations

import numpy as np
import pytest

from mlet_compress.data import (DataSpec, SyntheticConfig, generate_synthetic, iter_synthetic, load_dataset,
                                synthetic_vocab_sizes)
from mlet_compress.data.synthetic import _truth, synthetic_raw
from mlet_compress.errors import ConfigError
from mlet_compress.metrics import roc_auc

SMALL = SyntheticConfig(num_rows=5000, vocab_sizes=(4, 60, 3000), num_dense=2, block_rows=2048, seed=11)


def test_deterministic_by_seed():
    a, b = generate_synthetic(SMALL), generate_synthetic(SMALL)
    for f in ("dense", "sparse", "labels"):
        np.testing.assert_array_equal(getattr(a, f), getattr(b, f))
    c = generate_synthetic(SyntheticConfig(**{**SMALL.to_dict(), "vocab_sizes": (4, 60, 3000), "seed": 12}))
    assert not np.array_equal(a.sparse, c.sparse)
    assert a.sparse.dtype == np.int64 and a.dense.dtype == np.float32 and a.labels.dtype == np.float32
    sizes = synthetic_vocab_sizes(SMALL)
    assert sizes == [5, 61, 3001] and a.sparse.min() >= 1 and np.all(a.sparse.max(0) < sizes)


def test_chunks_equal_in_memory_and_stream_any_size():
    blocks = list(iter_synthetic(SMALL))
    assert [len(b) for b in blocks] == [2048, 2048, 904]
    whole = generate_synthetic(SMALL)
    np.testing.assert_array_equal(np.concatenate([b.sparse for b in blocks]), whole.sparse)
    np.testing.assert_array_equal(np.concatenate([b.labels for b in blocks]), whole.labels)
    huge = SyntheticConfig(**{**SMALL.to_dict(), "vocab_sizes": (4, 60, 3000), "num_rows": 10 ** 8})
    first = next(iter_synthetic(huge))  # lazily: only block 0 is generated
    np.testing.assert_array_equal(first.sparse, blocks[0].sparse)
    with pytest.raises(ConfigError, match="iter_synthetic"):
        generate_synthetic(huge)


def test_zipf_long_tail():
    cfg = SyntheticConfig(num_rows=60_000, vocab_sizes=(20_000, 50), zipf_exponent=1.1, seed=3)
    raw, _ = synthetic_raw(cfg)
    truth = _truth(cfg)
    counts = np.bincount(raw.columns[0].codes, minlength=20_000)[truth.perm[0]]  # by Zipf rank
    p = np.arange(1, 20_001, dtype=float) ** -1.1
    p /= p.sum()
    n = cfg.num_rows
    sd = np.sqrt(n * p * (1 - p))
    assert np.all(np.abs(counts[:20] - n * p[:20]) < 5 * sd[:20])  # head follows the law
    tail = counts[1000:].sum()  # mass beyond rank 1000 (a long tail)
    assert abs(tail - n * p[1000:].sum()) < 5 * np.sqrt(n * p[1000:].sum())
    seen = counts[counts > 0]
    assert (seen <= 2).mean() > 0.5  # most observed categories are rare
    assert counts[:200].sum() / n > 0.5  # while 1% of the categories hold most rows


def test_default_config_ctr_and_bayes_auc():
    cfg = SyntheticConfig()
    assert 8 <= len(cfg.resolved_vocab_sizes()) <= 12 and cfg.resolved_vocab_sizes()[0] == 10
    assert cfg.resolved_vocab_sizes()[-1] == 50_000
    raw, probs = synthetic_raw(cfg)
    n = len(raw)
    assert abs(raw.labels.mean() - cfg.target_ctr) < 5 * np.sqrt(0.25 * 0.75 / n) + 0.005
    assert abs(roc_auc(raw.labels, probs) - cfg.target_auc) < 0.01
    s = load_dataset(DataSpec(format="synthetic"))
    assert s.info["rows"] == {"train": 160_000, "val": 20_000, "test": 20_000}
    assert 0.75 <= s.info["synthetic_bayes"]["test_auc"] <= 0.81
    assert s.preprocessor.vocab_sizes[0] == 11 and s.preprocessor.field_names[0] == "c0"


def test_calibration_targets_respected():
    cfg = SyntheticConfig(num_rows=40_000, vocab_sizes=(10, 100, 1000), target_ctr=0.1, target_auc=0.7, seed=4)
    raw, probs = synthetic_raw(cfg)
    assert abs(probs.mean() - 0.1) < 0.01 and abs(roc_auc(raw.labels, probs) - 0.7) < 0.015


@pytest.mark.parametrize("bad", [dict(num_rows=0), dict(vocab_sizes=(5,)), dict(target_auc=0.995),
                                 dict(zipf_exponent=0.0), dict(block_rows=10)])
def test_config_validation(bad):
    with pytest.raises(ConfigError, match="SyntheticConfig"):
        generate_synthetic(SyntheticConfig(**{**dict(num_rows=100), **bad}))
