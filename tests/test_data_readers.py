"""Readers on tiny fixture files written by the tests (criteo, avazu, libfm, movielens, csv/parquet)."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest

from mlet_compress.data.readers_avazu import hour_features, read_avazu
from mlet_compress.data.readers_criteo import read_criteo
from mlet_compress.data.readers_csv import read_csv_table
from mlet_compress.data.readers_libfm import read_libfm
from mlet_compress.data.readers_movielens import GENRES, read_movielens
from conftest import criteo_rows, write_lines
from mlet_compress.errors import ConfigError, DataError


def raw_ids(raw, f: int) -> list:
    """Raw values of field f per row (None = missing)."""
    keys = raw.columns[f].keys
    keys = keys.to_pylist() if hasattr(keys, "to_pylist") else list(keys)
    return [None if c < 0 else keys[c] for c in raw.columns[f].codes]


# ---------------------------------------------------------------------------------------------- criteo
def test_criteo_tsv_values(tmp_path):
    rows = criteo_rows(50)
    raw = read_criteo(write_lines(tmp_path / "c.txt", ["\t".join(r) for r in rows]))
    assert len(raw) == 50 and raw.field_names[0] == "C1" and raw.dense_names[-1] == "I13"
    np.testing.assert_array_equal(raw.labels, [float(r[0]) for r in rows])
    expect = np.array([[np.nan if v == "" else float(v) for v in r[1:14]] for r in rows])
    np.testing.assert_array_equal(raw.dense, expect)
    for f in (0, 25):
        assert raw_ids(raw, f) == [None if r[14 + f] == "" else r[14 + f] for r in rows]


def test_criteo_header_crlf_equals_tsv(tmp_path):
    rows = criteo_rows(40, seed=1)
    tsv = read_criteo(write_lines(tmp_path / "c.txt", ["\t".join(r) for r in rows]))
    header = "Id,Label," + ",".join(f"I{i}" for i in range(1, 14)) + "," + ",".join(f"C{i}" for i in range(1, 27))
    lines = [header] + [f"{10000000 + i}," + ",".join(r) for i, r in enumerate(rows)]
    csv = read_criteo(write_lines(tmp_path / "c.csv", lines, newline="\r\n"))
    np.testing.assert_array_equal(csv.labels, tsv.labels)
    np.testing.assert_array_equal(csv.dense, tsv.dense)
    for f in range(26):
        assert raw_ids(csv, f) == raw_ids(tsv, f)


@pytest.mark.parametrize("bad, where", [
    (lambda r: r[:-1], "expected 40 columns, got 39"),
    (lambda r: r[:3] + ["12x"] + r[4:], "'I3' value '12x' is not an integer"),
    (lambda r: ["2"] + r[1:], "label must be 0 or 1"),
])
def test_criteo_malformed_row_names_file_and_line(tmp_path, bad, where):
    rows = criteo_rows(30, seed=2)
    lines = ["\t".join(r) for r in rows]
    lines[16] = "\t".join(bad(rows[16]))  # physical line 17
    lines.insert(5, "")  # a blank line is ignored, but still counts as a physical line -> line 18
    path = write_lines(tmp_path / "bad.txt", lines)
    with pytest.raises(DataError) as ei:
        read_criteo(path)
    msg = str(ei.value)
    assert str(path) in msg and "line 18:" in msg and where in msg
    raw = read_criteo(path, skip_bad_rows=True)
    assert raw.skipped == 1 and len(raw) == 29
    good = read_criteo(write_lines(tmp_path / "good.txt", ["\t".join(r) for i, r in enumerate(rows) if i != 16]))
    np.testing.assert_array_equal(raw.dense, good.dense)
    assert raw_ids(raw, 3) == raw_ids(good, 3)


def test_criteo_skip_counts_several_bad_rows(tmp_path):
    rows = criteo_rows(20, seed=3)
    lines = ["\t".join(r) for r in rows]
    lines[2] = lines[2] + "\textra"
    lines[7] = "\t".join(rows[7][:5] + ["abc"] + rows[7][6:])
    lines[11] = "1\t2"
    raw = read_criteo(write_lines(tmp_path / "b.txt", lines), skip_bad_rows=True)
    assert raw.skipped == 3 and len(raw) == 17
    with pytest.raises(DataError, match=r"line 3: expected 40 columns, got 41"):
        read_criteo(tmp_path / "b.txt")


def test_criteo_missing_file(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        read_criteo(tmp_path / "nope.txt")


# ----------------------------------------------------------------------------------------------- avazu
AVAZU_HEADER = "id,click,hour,C1,banner_pos,site_id,device_ip"


def test_avazu_id_overflow_and_hour_features(tmp_path):
    lines = [AVAZU_HEADER,
             "18446744073709551615,0,14102100,1005,0,1fbe01fe,ddd2926e",   # id = 2**64 - 1
             "10000169349117863715,1,14102813,1002,1,85f751fd,",
             "1000009418151094273,0,14103023,1005,0,1fbe01fe,ddd2926e"]
    raw = read_avazu(write_lines(tmp_path / "a.csv", lines))
    assert raw.field_names == ["hour_of_day", "weekday", "C1", "banner_pos", "site_id", "device_ip"]
    np.testing.assert_array_equal(raw.labels, [0, 1, 0])
    assert raw.dense.shape == (3, 0)
    # 2014-10-21 Tue, 2014-10-28 Tue, 2014-10-30 Thu; Monday = 0
    assert raw_ids(raw, 0) == [0, 13, 23] and raw_ids(raw, 1) == [1, 1, 3]
    assert raw_ids(raw, 2) == ["1005", "1002", "1005"] and raw_ids(raw, 5) == ["ddd2926e", None, "ddd2926e"]


def test_hour_features_weekdays():
    hh, wd = hour_features(np.array([14010100, 16022923, 20123112]))
    np.testing.assert_array_equal(hh, [0, 23, 12])
    np.testing.assert_array_equal(wd, [2, 0, 3])  # 2014-01-01 Wed, 2016-02-29 Mon, 2020-12-31 Thu


def test_avazu_bad_hour_and_label(tmp_path):
    lines = [AVAZU_HEADER, "1,0,14102100,1005,0,a,b", "2,0,14132100,1005,0,a,b", "3,5,14102100,1005,0,a,b"]
    path = write_lines(tmp_path / "a.csv", lines)
    with pytest.raises(DataError, match=r"a\.csv: line 3: column 'hour'.*YYMMDDHH"):
        read_avazu(path)
    raw = read_avazu(path, skip_bad_rows=True)
    assert raw.skipped == 2 and len(raw) == 1
    with pytest.raises(DataError, match="click"):
        read_avazu(write_lines(tmp_path / "t.csv", ["id,hour,C1", "1,14102100,1"]))


# ----------------------------------------------------------------------------------------------- libfm
def test_libfm_labels_and_tokens(tmp_path):
    lines = ["-1 3:1 10:1 22:1", "+1 4:1 10:1.0 23", "1 3:1 11:1 22:1", "0 5:1 10:1 22:1", "",
             "1.0  3:1\t12:1 24:1  "]
    raw = read_libfm(write_lines(tmp_path / "x.libfm", lines))
    np.testing.assert_array_equal(raw.labels, [0, 1, 1, 0, 1])
    assert raw.field_names == ["f0", "f1", "f2"]
    assert raw_ids(raw, 0) == ["3", "4", "3", "5", "3"]
    assert raw_ids(raw, 1) == ["10", "10", "11", "10", "12"]
    assert raw_ids(raw, 2) == ["22", "23", "22", "22", "24"]


def test_libfm_malformed(tmp_path):
    path = write_lines(tmp_path / "x.libfm", ["1 3:1 10:1", "0 3:1", "1 3:1 x:y:z", "2 3:1 10:1", "0 4:1 11:1"])
    with pytest.raises(DataError, match=r"x\.libfm: line 2: expected 3 tokens"):
        read_libfm(path)
    raw = read_libfm(path, skip_bad_rows=True)
    assert raw.skipped == 3 and len(raw) == 2
    with pytest.raises(DataError, match="line 3: token 'x:y:z'"):
        read_libfm(write_lines(tmp_path / "y.libfm", ["1 3:1 10:1", "0 3:1 10:1", "1 3:1 x:y:z"]))
    with pytest.raises(DataError, match="line 1: label '2'"):
        read_libfm(write_lines(tmp_path / "z.libfm", ["2 3:1 10:1"]))


# ------------------------------------------------------------------------------------------- movielens
INTER = [(1, 10, 5, 881250949), (1, 20, 3, 881250950), (2, 10, 4, 881250951), (3, 30, 1, 881250952),
         (2, 30, 2, 881250953), (3, 20, 4, 881250954), (4, 10, 5, 881250955)]
USERS = [(1, 24, "M", "technician", "85711"), (2, 53, "F", "other", "94043"), (3, 23, "M", "writer", "32067")]
ITEMS = [(10, "Toy Story (1995)", "01-Jan-1995", "Animation Children's Comedy", [3, 4, 5]),
         (20, "GoldenEye (1995)", "01-Jan-1995", "Action Adventure Thriller", [1, 2, 16]),
         (30, "Heat (1995)", "", "", [])]


def _write_recbole(d: Path) -> Path:
    d.mkdir()
    write_lines(d / "ml.inter", ["user_id:token\titem_id:token\trating:float\ttimestamp:float"]
                + ["\t".join(map(str, r)) for r in INTER])
    write_lines(d / "ml.user", ["user_id:token\tage:token\tgender:token\toccupation:token\tzip_code:token"]
                + ["\t".join(map(str, u)) for u in USERS])
    write_lines(d / "ml.item", ["item_id:token\tmovie_title:token_seq\trelease_year:token\tclass:token_seq"]
                + [f"{i}\t{t}\t{rd[-4:]}\t{c}" for i, t, rd, c, _ in ITEMS])
    return d


def _write_grouplens(d: Path) -> Path:
    d.mkdir()
    write_lines(d / "u.data", ["\t".join(map(str, r)) for r in INTER])
    write_lines(d / "u.user", ["|".join(map(str, u)) for u in USERS])
    write_lines(d / "u.genre", [f"{g}|{j}" for j, g in enumerate(GENRES)] + [""])
    items = []
    for i, t, rd, _, g in ITEMS:
        flags = ["1" if j in g else "0" for j in range(19)]
        items.append("|".join([str(i), t, rd, "", "http://x"] + flags))
    (d / "u.item").write_bytes(("\n".join(items) + "\n").replace("Heat", "H\u00e9at").encode("latin-1"))
    return d


def test_movielens_both_layouts_agree(tmp_path):
    rb = read_movielens(_write_recbole(tmp_path / "rb"))
    gl = read_movielens(_write_grouplens(tmp_path / "gl") / "u.data")
    names = ["user_id", "item_id", "age", "gender", "occupation", "zip3", "release_year", "genre"]
    assert rb.field_names == gl.field_names == names
    np.testing.assert_array_equal(rb.labels, [1, 0, 1, 0, 0, 1, 1])
    np.testing.assert_array_equal(gl.labels, rb.labels)
    for f in range(len(names)):
        assert raw_ids(rb, f) == raw_ids(gl, f), names[f]
    assert raw_ids(rb, 5) == ["857", "857", "940", "320", "940", "320", None]  # user 4 has no features
    assert raw_ids(rb, 6) == ["1995", "1995", "1995", None, None, "1995", "1995"]
    assert raw_ids(rb, 7)[:4] == ["Animation", "Action", "Animation", None]


def test_movielens_file_path_and_no_side_files(tmp_path):
    d = _write_recbole(tmp_path / "rb")
    assert read_movielens(d / "ml.inter").field_names[-1] == "genre"
    (d / "ml.user").unlink()
    (d / "ml.item").unlink()
    raw = read_movielens(d)
    assert raw.field_names == ["user_id", "item_id"] and len(raw) == 7
    with pytest.raises(DataError, match="no \\*.inter"):
        read_movielens(tmp_path)


# ------------------------------------------------------------------------------------------ csv/parquet
def test_csv_columns_and_quotes(tmp_path):
    lines = ['y,city,n1,n2,note', '1,"Paris, FR",1.5,,a', '-1,Rome,2,3,b', '0,"Paris, FR",,4,a']
    raw = read_csv_table(write_lines(tmp_path / "d.csv", lines), label="y", categorical=["city", "note"],
                         numeric=["n1", "n2"])
    np.testing.assert_array_equal(raw.labels, [1, 0, 0])
    np.testing.assert_array_equal(raw.dense, [[1.5, np.nan], [2, 3], [np.nan, 4]])
    assert raw_ids(raw, 0) == ["Paris, FR", "Rome", "Paris, FR"]
    all_cat = read_csv_table(tmp_path / "d.csv", label="y")
    assert all_cat.field_names == ["city", "n1", "n2", "note"] and all_cat.dense.shape == (3, 0)
    with pytest.raises(ConfigError, match="label column 'z' not found"):
        read_csv_table(tmp_path / "d.csv", label="z")
    with pytest.raises(ConfigError, match="not found"):
        read_csv_table(tmp_path / "d.csv", label="y", categorical=["nope"])


def test_csv_bad_numeric_line(tmp_path):
    path = write_lines(tmp_path / "d.tsv", ["label\ta\tn", "1\tx\t1", "0\ty\tfoo", "1\tz\t2"])
    with pytest.raises(DataError, match=r"d\.tsv: line 3: column 'n' value 'foo' is not a number"):
        read_csv_table(path, categorical=["a"], numeric=["n"])
    raw = read_csv_table(path, categorical=["a"], numeric=["n"], skip_bad_rows=True)
    assert raw.skipped == 1 and raw_ids(raw, 0) == ["x", "z"]


def test_parquet_matches_csv(tmp_path):
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    table = pa.table({"label": [1, 0, 1, 0], "a": ["u", "v", "u", None], "b": [7, 8, 7, 9], "n": [1.0, None, 2.5, 3.0]})
    pq.write_table(table, tmp_path / "d.parquet")
    raw = read_csv_table(tmp_path / "d.parquet", categorical=["a", "b"], numeric=["n"])
    np.testing.assert_array_equal(raw.labels, [1, 0, 1, 0])
    np.testing.assert_array_equal(raw.dense[:, 0], [1.0, np.nan, 2.5, 3.0])
    assert raw_ids(raw, 0) == ["u", "v", "u", None] and raw_ids(raw, 1) == ["7", "8", "7", "9"]
    pq.write_table(pa.table({"label": [1, 3], "a": ["x", "y"]}), tmp_path / "bad.parquet")
    with pytest.raises(DataError, match="row 2: label 3.0"):
        read_csv_table(tmp_path / "bad.parquet")


def test_gzip_input_both_paths(tmp_path):
    rows = criteo_rows(30, seed=5)
    plain = read_criteo(write_lines(tmp_path / "c.txt", ["\t".join(r) for r in rows]))
    gz = tmp_path / "c.txt.gz"
    gz.write_bytes(gzip.compress((tmp_path / "c.txt").read_bytes()))
    got = read_criteo(gz)
    np.testing.assert_array_equal(got.dense, plain.dense)
    assert raw_ids(got, 7) == raw_ids(plain, 7)
    lines = ["\t".join(r) for r in rows]
    lines[9] = lines[9] + "\tx"
    gz.write_bytes(gzip.compress(("\n".join(lines) + "\n").encode()))
    with pytest.raises(DataError, match=r"c\.txt\.gz: line 10: expected 40 columns, got 41"):
        read_criteo(gz)
    lib = tmp_path / "x.libfm.gz"
    lib.write_bytes(gzip.compress(b"1 3:1 4:1\n-1 5:1 4:1\n"))
    assert read_libfm(lib).labels.tolist() == [1.0, 0.0]
