"""Throughput of the Criteo reader vs a bare ``pyarrow.csv.read_csv`` of the same file.

Generates a Criteo-format TSV (label, I1..I13, C1..C26; ~20% empty integer fields, ~10% empty
categoricals, Zipf-distributed 8-hex-digit categories) of ``--rows`` rows in a temp dir (or uses
``--file``, or the shared 8,000-row sample with ``--shared``), then times, median of ``--repeats`` interleaved rounds:

* ``bare``: ``pyarrow.csv.read_csv(path, delimiter='\\t', autogenerate_column_names=True)`` (type inference);
* ``reader``: ``mlet_compress.data.readers_criteo.read_criteo`` (typed parse, label check,
  dictionary-encoded categoricals, dense matrix);
* ``load``: ``load_dataset(DataSpec(path=path, format="criteo", cache_dir=False))`` (reader + split + vocabularies + transform).

Usage: ``python benchmarks/bench_parse.py [--rows 1000000] [--repeats 3] [--file F | --shared]``
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from mlet_compress.data import DataSpec, load_dataset
from mlet_compress.data.readers_criteo import read_criteo


def write_criteo_file(path: Path, rows: int, seed: int = 0) -> None:
    """Write a Criteo-like TSV with ``rows`` rows (vectorised, via pyarrow)."""
    rng = np.random.default_rng(seed)
    hexbytes = np.array([f"{i:02x}".encode() for i in range(256)], dtype="S2")
    cols = {"label": pa.array((rng.random(rows) < 0.25).astype(np.int8))}
    for i in range(1, 14):
        v = np.floor(rng.lognormal(1.5, 1.5, rows)).astype(np.int64) - (i == 2)
        cols[f"I{i}"] = pa.array(v, mask=rng.random(rows) < 0.2)
    for j in range(1, 27):
        card = int(10 ** rng.uniform(1, 6))
        ids = np.minimum(rng.zipf(1.2, rows), card).astype(np.uint64)
        h = ((ids * np.uint64(2654435761 + 2 * j)) % np.uint64(2 ** 32)).astype(">u4")
        txt = hexbytes[h.view(np.uint8).reshape(-1, 4)].view("S8").reshape(-1)
        arr = pa.array(txt, pa.binary()).cast(pa.string())
        cols[f"C{j}"] = pc.if_else(pa.array(rng.random(rows) < 0.1), pa.scalar(None, pa.string()), arr)
    table = pa.table(cols)
    pacsv.write_csv(table, path, write_options=pacsv.WriteOptions(include_header=False, delimiter="\t",
                                                                  quoting_style="none"))


def _median_times(fns: dict, repeats: int) -> dict:
    """Median wall time of each function; the repeats are interleaved (round-robin) so that a
    change of machine load during the run affects every contender alike."""
    times = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    return {name: statistics.median(ts) for name, ts in times.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--file", type=Path, default=None)
    ap.add_argument("--shared", action="store_true", help="use the shared 8,000-row Criteo sample")
    args = ap.parse_args()

    tmp = tempfile.TemporaryDirectory()
    if args.shared:
        path = Path(__file__).resolve().parents[1].parent / "shared/data/criteo_kaggle_sample/criteo_train_rows00001-08000.txt"
    elif args.file is not None:
        path = args.file
    else:
        path = Path(tmp.name) / "criteo.txt"
        t0 = time.perf_counter()
        write_criteo_file(path, args.rows)
        print(f"generated {args.rows:,} rows ({path.stat().st_size / 2**20:.0f} MiB) in {time.perf_counter() - t0:.1f} s")
    size_mb = path.stat().st_size / 2 ** 20
    rows = read_criteo(path).labels.shape[0]

    def bare():
        pacsv.read_csv(path, read_options=pacsv.ReadOptions(autogenerate_column_names=True),
                       parse_options=pacsv.ParseOptions(delimiter="\t"))

    results = _median_times({
        "bare pyarrow.csv.read_csv": bare,
        "read_criteo": lambda: read_criteo(path),
        "load_dataset (no cache)": lambda: load_dataset(DataSpec(path=path, format="criteo", cache_dir=False)),
    }, args.repeats)
    print(f"file: {path.name}, {rows:,} rows, {size_mb:.0f} MiB, pyarrow {pa.__version__}, "
          f"cpus {os.cpu_count()}, median of {args.repeats}")
    base = results["bare pyarrow.csv.read_csv"]
    for name, t in results.items():
        print(f"  {name:28s} {t:8.3f} s  {rows / t:12,.0f} rows/s  {size_mb / t:7.1f} MiB/s  time x{t / base:5.2f} of bare")
    print(f"ratio read_criteo / bare (rows/s): {base / results['read_criteo']:.2f}")
    tmp.cleanup()


if __name__ == "__main__":
    main()
