"""load_dataset / load_eval_split: vocabularies on train only, splits, cache, preprocessor round trip."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest

from mlet_compress.data import (DataSpec, DataSplits, Preprocessor, SyntheticConfig, load_dataset, load_eval_split,
                                sample_log_frequency, split_indices)
from mlet_compress.data import core
from conftest import criteo_rows, write_lines
from mlet_compress.errors import ConfigError, DataError



def _csv(path: Path, cats: list[str], labels: list[int] | None = None, nums: list[float] | None = None) -> Path:
    labels = labels if labels is not None else [i % 2 for i in range(len(cats))]
    nums = nums if nums is not None else [float(i) for i in range(len(cats))]
    return write_lines(path, ["label,cat,num"] + [f"{y},{c},{x}" for y, c, x in zip(labels, cats, nums)])


def _criteo(tmp_path: Path, n: int = 140, seed: int = 0) -> tuple[Path, list[list[str]]]:
    rows = criteo_rows(n, seed)
    return write_lines(tmp_path / "train.txt", ["\t".join(r) for r in rows]), rows


# ------------------------------------------------------------------------------------------ vocabulary
def test_vocab_train_only_min_freq_and_oov(tmp_path):
    train = _csv(tmp_path / "tr.csv", ["a", "b", "a", "c", "b", "a", "e", "e"])
    test = _csv(tmp_path / "te.csv", ["a", "b", "c", "d", "e", "zz"])
    val = _csv(tmp_path / "va.csv", ["d", "a"])
    s = load_dataset(DataSpec(path=train, format="csv", categorical=["cat"], val_data=val, test_data=test, min_freq=2,
                              cache_dir=False))
    pre = s.preprocessor
    # a:3 -> id 1; b:2 and e:2 tie -> key order b (2), e (3); c (1x) is below min_freq -> OOV 0
    assert pre.vocab_sizes == [4] and pre.vocabs[0].to_pylist() == ["a", "b", "e"]
    np.testing.assert_array_equal(pre.train_counts[0], [1, 3, 2, 2])
    np.testing.assert_array_equal(s.train.sparse[:, 0], [1, 2, 1, 0, 2, 1, 3, 3])
    np.testing.assert_array_equal(s.test.sparse[:, 0], [1, 2, 0, 0, 3, 0])  # c rare, d/zz unseen in train
    np.testing.assert_array_equal(s.val.sparse[:, 0], [0, 1])  # d is only in val/test: never in the vocab
    s1 = load_dataset(DataSpec(path=train, format="csv", categorical=["cat"], val_data=val, test_data=test,
                               cache_dir=False))
    assert s1.preprocessor.vocabs[0].to_pylist() == ["a", "b", "e", "c"]
    np.testing.assert_array_equal(s1.test.sparse[:, 0], [1, 2, 4, 0, 3, 0])
    with pytest.raises(ConfigError, match="min_freq"):
        load_dataset(DataSpec(path=train, format="csv", min_freq=0, cache_dir=False))


def test_dense_transforms(tmp_path):
    path, rows = _criteo(tmp_path, 70)
    s = load_dataset(DataSpec(path=path, format="criteo", cache_dir=False))
    raw = np.array([[np.nan if v == "" else float(v) for v in r[1:14]] for r in rows[:60]])
    expect = np.log1p(np.maximum(np.nan_to_num(raw), 0)).astype(np.float32)
    np.testing.assert_array_equal(s.train.dense, expect)
    assert s.train.dense.dtype == np.float32 and s.train.sparse.dtype == np.int64
    # csv: standardize with train mean/std, missing -> 0
    tr = _csv(tmp_path / "tr.csv", ["a"] * 4, nums=[1.0, 2.0, 3.0, 6.0])
    te = write_lines(tmp_path / "te.csv", ["label,cat,num", "1,a,4", "0,a,"])
    va = _csv(tmp_path / "va.csv", ["a"], nums=[0.0])
    spec = DataSpec(path=tr, format="csv", categorical=["cat"], numeric=["num"], val_data=va, test_data=te,
                    cache_dir=False)
    s = load_dataset(spec)
    np.testing.assert_allclose(s.test.dense[:, 0], [(4 - 3) / np.sqrt(3.5), 0.0], rtol=1e-6)
    s = load_dataset(dataclasses.replace(spec, numeric_transform="log1p"))
    np.testing.assert_allclose(s.test.dense[:, 0], [np.log(5), 0.0], rtol=1e-6)


def test_preprocessor_json_round_trip(tmp_path):
    path, _ = _criteo(tmp_path, 70)
    s = load_dataset(DataSpec(path=path, format="criteo", min_freq=2, cache_dir=False))
    d = json.loads(json.dumps(s.preprocessor.to_dict()))
    pre = Preprocessor.from_dict(d)
    assert pre.vocab_sizes == s.preprocessor.vocab_sizes and pre.min_freq == 2
    raw = core._read("criteo", path, s.info["options"], None)
    again = pre.transform(raw.take(np.arange(60, 70)))
    np.testing.assert_array_equal(np.concatenate([s.val.sparse, s.test.sparse]), again.sparse)
    d["vocab_sizes"][0] += 1
    with pytest.raises(ConfigError, match="vocab_sizes"):
        Preprocessor.from_dict(d)


def test_sample_log_frequency(tmp_path):
    train = _csv(tmp_path / "tr.csv", ["a", "a", "a", "b"])
    s = load_dataset(DataSpec(path=train, format="csv", categorical=["cat"],
                              test_data=_csv(tmp_path / "te.csv", ["a", "b", "q"]),
                              val_data=_csv(tmp_path / "va.csv", ["a"]), cache_dir=False))
    lf = sample_log_frequency(s.preprocessor, s.test.sparse)
    np.testing.assert_allclose(lf, [np.log(3), np.log(1), np.log(0.5)])
    two = np.stack([s.test.sparse[:, 0], s.test.sparse[:, 0]], 1)
    with pytest.raises(DataError, match="expected"):
        sample_log_frequency(s.preprocessor, two)


# ----------------------------------------------------------------------------------------------- splits
def test_split_indices_rules():
    t = split_indices(700, "time")
    assert [len(t[k]) for k in ("train", "val", "test")] == [600, 50, 50]
    np.testing.assert_array_equal(np.concatenate([t["train"], t["val"], t["test"]]), np.arange(700))
    r = split_indices(1000, "random", seed=5)
    assert [len(r[k]) for k in ("train", "val", "test")] == [800, 100, 100]
    allr = np.concatenate([r["train"], r["val"], r["test"]])
    np.testing.assert_array_equal(np.sort(allr), np.arange(1000))
    assert all(np.all(np.diff(r[k]) > 0) for k in r)
    again = split_indices(1000, "random", seed=5)
    assert all(np.array_equal(r[k], again[k]) for k in r)
    assert not np.array_equal(r["test"], split_indices(1000, "random", seed=6)["test"])
    assert set(split_indices(140, "time", has_test_file=True)) == {"train", "val"}
    assert len(split_indices(140, "time", has_val_file=True)["test"]) == 10
    assert len(split_indices(900, "random", has_test_file=True)["val"]) == 100
    assert list(split_indices(9, "random", has_val_file=True, has_test_file=True)) == ["train"]
    with pytest.raises(ConfigError):
        split_indices(10, "weird")


def test_criteo_time_split_is_file_order(tmp_path):
    path, rows = _criteo(tmp_path, 140)
    s = load_dataset(DataSpec(path=path, format="criteo", cache_dir=False))
    assert s.info["rows"] == {"train": 120, "val": 10, "test": 10}
    np.testing.assert_array_equal(np.concatenate([s.train.labels, s.val.labels, s.test.labels]),
                                  [float(r[0]) for r in rows])
    assert s.info["split"]["rule"] == "time" and s.info["skipped_bad_rows"] == 0
    json.dumps(s.info)


def test_random_split_determinism_and_external_files(tmp_path):
    cats = [f"k{i % 37}" for i in range(500)]
    path = _csv(tmp_path / "d.csv", cats)
    kw = {"categorical": ["cat"], "numeric": ["num"], "cache_dir": False}
    a = load_dataset(DataSpec(path=path, format="csv", seed=3, **kw))
    b = load_dataset(DataSpec(path=path, format="csv", seed=3, **kw))
    c = load_dataset(DataSpec(path=path, format="csv", seed=4, **kw))
    assert a.info["rows"] == {"train": 400, "val": 50, "test": 50}
    np.testing.assert_array_equal(a.test.dense, b.test.dense)
    assert not np.array_equal(a.test.dense, c.test.dense)
    te = _csv(tmp_path / "te.csv", cats[:30])
    s = load_dataset(DataSpec(path=path, format="csv", test_data=te, cache_dir=False))
    assert s.info["rows"] == {"train": 444, "val": 56, "test": 30}
    s = load_dataset(DataSpec(path=path, format="csv", val_data=te, cache_dir=False))
    assert s.info["rows"] == {"train": 450, "val": 30, "test": 50}


# ------------------------------------------------------------------------------------------------ cache
def _boom(*a, **k):
    raise AssertionError("the parser ran although the result is cached")


def _same(a: DataSplits, b: DataSplits) -> None:
    for name in ("train", "val", "test"):
        x, y = getattr(a, name), getattr(b, name)
        for f in ("dense", "sparse", "labels"):
            np.testing.assert_array_equal(getattr(x, f), getattr(y, f))
    assert a.preprocessor.to_dict() == b.preprocessor.to_dict()


def test_cache_hit_skips_parsing(tmp_path, monkeypatch):
    path, _ = _criteo(tmp_path, 140)
    cdir = tmp_path / "cache"
    first = load_dataset(DataSpec(path=path, format="criteo", cache_dir=cdir))
    assert first.info["cache"]["hit"] is False and Path(first.info["cache"]["path"]).is_file()
    assert not [p for p in cdir.iterdir() if p.name.endswith(".tmp")]
    monkeypatch.setattr(core, "_read", _boom)
    second = load_dataset(DataSpec(path=path, format="criteo", cache_dir=cdir))
    assert second.info["cache"]["hit"] is True
    _same(first, second)
    with pytest.raises(AssertionError, match="parser ran"):  # another option -> another key
        load_dataset(DataSpec(path=path, format="criteo", cache_dir=cdir, min_freq=2))
    path.write_bytes(path.read_bytes() + b"\n".join([b"\t".join(r.encode() for r in criteo_rows(1, 9)[0])]) + b"\n")
    with pytest.raises(AssertionError, match="parser ran"):  # new content -> another key
        load_dataset(DataSpec(path=path, format="criteo", cache_dir=cdir))


def test_corrupt_cache_entry_is_a_miss(tmp_path):
    path, _ = _criteo(tmp_path, 70)
    cdir = tmp_path / "cache"
    first = load_dataset(DataSpec(path=path, format="criteo", cache_dir=cdir))
    Path(first.info["cache"]["path"]).write_bytes(b"garbage")
    again = load_dataset(DataSpec(path=path, format="criteo", cache_dir=cdir))
    assert again.info["cache"]["hit"] is False
    _same(first, again)


# -------------------------------------------------------------------------------------------- eval split
@pytest.mark.parametrize("fmt", ["criteo", "csv"])
def test_load_eval_split_reproduces_test(tmp_path, fmt, monkeypatch):
    if fmt == "criteo":
        path, _ = _criteo(tmp_path, 140)
        kw = {}
    else:
        path = _csv(tmp_path / "d.csv", [f"k{i % 13}" for i in range(300)])
        kw = {"seed": 7, "categorical": ["cat"], "numeric": ["num"]}
    cdir = tmp_path / "cache"
    spec = DataSpec(path=path, format=fmt, cache_dir=cdir, **kw)
    s = load_dataset(spec)
    info = json.loads(json.dumps(s.info))
    pre_d = json.loads(json.dumps(s.preprocessor.to_dict()))
    for cache in (False, cdir):
        t = load_eval_split(dataclasses.replace(spec, cache_dir=cache), pre_d, info)
        np.testing.assert_array_equal(t.sparse, s.test.sparse)
        np.testing.assert_array_equal(t.dense, s.test.dense)
        np.testing.assert_array_equal(t.labels, s.test.labels)
    monkeypatch.setenv("MLET_CACHE_DIR", str(tmp_path / "no-cache"))
    t = load_eval_split(None, pre_d, info)  # path, format and options from info
    np.testing.assert_array_equal(t.sparse, s.test.sparse)
    with pytest.raises(ConfigError, match="seed"):
        load_eval_split(dataclasses.replace(spec, cache_dir=False, seed=99), pre_d, info)
    with open(path, "ab") as fh:  # one more (duplicated) row: the content hash changes
        fh.write(path.read_bytes().splitlines(keepends=True)[-1])
    with pytest.raises(DataError, match="sha256"):
        load_eval_split(dataclasses.replace(spec, cache_dir=False), pre_d, info)


def test_load_eval_split_new_test_file(tmp_path):
    train = _csv(tmp_path / "tr.csv", ["a", "b", "a", "c"] * 10)
    spec = DataSpec(path=train, format="csv", categorical=["cat"], cache_dir=False)
    s = load_dataset(spec)
    new = _csv(tmp_path / "new.csv", ["c", "zz", "a"])
    t = load_eval_split(dataclasses.replace(spec, test_data=new), s.preprocessor.to_dict(), s.info)
    vocab = s.preprocessor.vocabs[0].to_pylist()
    np.testing.assert_array_equal(t.sparse[:, 0], [vocab.index("c") + 1, 0, vocab.index("a") + 1])


def test_synthetic_eval_split_and_options():
    cfg = SyntheticConfig(num_rows=4000, vocab_sizes=(5, 50, 400), num_dense=2, block_rows=1024)
    spec = DataSpec(format="synthetic", synthetic=cfg, seed=2, categorical=["c0", "c2"])
    s = load_dataset(spec)
    assert s.preprocessor.field_names == ["c0", "c2"] and s.train.dense.shape[1] == 2
    for eval_spec in (spec, None):  # the run's spec, or everything from info
        t = load_eval_split(eval_spec, s.preprocessor.to_dict(), json.loads(json.dumps(s.info)))
        np.testing.assert_array_equal(t.sparse, s.test.sparse)
        np.testing.assert_array_equal(t.labels, s.test.labels)
    with pytest.raises(ConfigError, match="seed"):  # a default seed is not the run's seed 2
        load_eval_split(DataSpec(format="synthetic"), s.preprocessor.to_dict(), s.info)
    # skip_bad_rows does not apply to generated rows (recorded as False): a run trained with it still evaluates
    skipping = dataclasses.replace(spec, skip_bad_rows=True)
    t = load_eval_split(skipping, load_dataset(skipping).preprocessor.to_dict(), s.info)
    np.testing.assert_array_equal(t.sparse, s.test.sparse)
    with pytest.raises(ConfigError, match="no path"):
        load_dataset(DataSpec(path="x.csv", format="synthetic"))
    with pytest.raises(ConfigError, match="unknown"):
        load_dataset(DataSpec(path=None, format="tfrecord"))
    with pytest.raises(ConfigError, match="fixed label"):
        load_dataset(DataSpec(path="x.txt", format="criteo", label="y"))


# ------------------------------------------------------------------------------------------------ spec
def test_data_spec_normalises_and_validates(tmp_path):
    spec = DataSpec(path=tmp_path / "x.csv", format="csv", test_data=tmp_path / "t.csv", cache_dir=tmp_path)
    assert (spec.path, spec.test_data, spec.cache_dir) == (str(tmp_path / "x.csv"), str(tmp_path / "t.csv"), str(tmp_path))
    assert DataSpec.from_dict(json.loads(json.dumps(spec.to_dict()))) == spec
    syn = DataSpec(synthetic=SyntheticConfig(num_rows=1000))
    assert syn.synthetic == SyntheticConfig(num_rows=1000).to_dict()
    assert syn.synthetic_config() == SyntheticConfig(num_rows=1000)
    bad = [(dict(synthetic={"rows": 5}), "unknown option"), (dict(numeric_transform="log1p"), "file formats"),
           (dict(path="x.csv", format="csv", numeric_transform="sqrt"), "numeric_transform"),
           (dict(path="x.csv", format="csv", categorical="cat"), "list of column names"),
           (dict(format="csv"), "needs a data path"), (dict(format="tfrecord"), "unknown"),
           (dict(min_freq=0), "min_freq")]
    for kw, match in bad:
        with pytest.raises(ConfigError, match=match):
            DataSpec(**kw)
    with pytest.raises(ConfigError, match="unknown option"):
        DataSpec.from_dict({"path": None, "rows": 3})
    with pytest.raises(ConfigError, match="takes a DataSpec"):
        load_dataset("train.txt")
