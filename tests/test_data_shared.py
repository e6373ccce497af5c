"""The real shared samples (criteo, avazu, movielens): row counts and label rates from their SOURCES.md.

Skipped when /work/shared/data (the licensed samples, never copied into the repo) is absent.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from mlet_compress.data import DataSpec, load_dataset
from mlet_compress.data.readers_avazu import read_avazu
from mlet_compress.data.readers_criteo import read_criteo
from mlet_compress.data.readers_movielens import read_movielens

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
pytestmark = pytest.mark.skipif(not DATA.is_dir(), reason="shared data samples not present")


def _codes_as_values(col):
    keys = col.keys.to_pylist()
    return [None if c < 0 else keys[c] for c in col.codes]


def test_criteo_sample_counts_and_header_variant(tmp_path):
    tsv = read_criteo(DATA / "criteo_kaggle_sample" / "criteo_train_rows00001-08000.txt")
    assert len(tsv) == 8000 and int(tsv.labels.sum()) == 1728
    assert tsv.dense[0, :3].tolist() == [1.0, 1.0, 5.0] and np.isnan(tsv.dense[0, 11])
    assert np.nanmin(tsv.dense[:, 1]) < 0  # I2 has negative values (clipped later by log1p)
    csv = read_criteo(DATA / "criteo_kaggle_sample" / "criteo_train_tiny_rows00001-01999_with_header_crlf.csv")
    assert len(csv) == 1999 and int(csv.labels.sum()) == 418
    np.testing.assert_array_equal(csv.dense, tsv.dense[:1999])
    for f in (0, 21, 25):
        assert _codes_as_values(csv.columns[f]) == _codes_as_values(tsv.columns[f])[:1999]
    s = load_dataset(DataSpec(path=DATA / "criteo_kaggle_sample" / "criteo_train_rows00001-08000.txt",
                              format="criteo", cache_dir=tmp_path))
    assert s.info["rows"] == {"train": 6857, "val": 571, "test": 572}
    assert s.train.dense.min() == 0.0 and len(s.preprocessor.vocab_sizes) == 26


def test_avazu_sample_counts():
    raw = read_avazu(DATA / "avazu_sample" / "avazu_train_first8999.csv")
    assert len(raw) == 8999 and int(raw.labels.sum()) == 1563
    assert len(raw.field_names) == 23  # 24 columns - id - click - hour + hour_of_day + weekday
    assert set(raw.columns[0].codes.tolist()) == {0} and set(raw.columns[1].codes.tolist()) == {1}  # 2014-10-21 Tue


def test_movielens_sample_counts():
    raw = read_movielens(DATA / "movielens-100k")
    assert len(raw) == 100_000 and int(raw.labels.sum()) == 34_174 + 21_201 == 55_375
    sizes = dict(zip(raw.field_names, (len(c.keys) for c in raw.columns)))
    assert sizes["user_id"] == 943 and sizes["item_id"] == 1682 and sizes["gender"] == 2
    assert sizes["occupation"] == 21 and min(int((c.codes >= 0).mean() * 100) for c in raw.columns) >= 99
    same = read_movielens(DATA / "movielens-100k" / "ml-100k.inter")
    np.testing.assert_array_equal(same.columns[-1].codes, raw.columns[-1].codes)
