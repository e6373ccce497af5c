"""``load_dataset`` with its parsed-array cache: the first call (parse, split, vocabularies, encoding, write
the cache) vs later calls (cache hits), on a generated Criteo TSV (``bench_parse.write_criteo_file``).

    python benchmarks/bench_load_cache.py [--rows 1000000] [--repeats 5]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from _common import load_line
from bench_parse import write_criteo_file
from mlet_compress.data import DataSpec, load_dataset


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path, cache = Path(tmp) / "criteo.tsv", Path(tmp) / "cache"
        write_criteo_file(path, args.rows)
        spec = DataSpec(path=path, format="criteo", cache_dir=str(cache))
        t0 = time.perf_counter()
        load_dataset(spec)
        miss = time.perf_counter() - t0
        hits = []
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            load_dataset(spec)
            hits.append(time.perf_counter() - t0)
        size = path.stat().st_size / 2**20
    print(f"{args.rows:,}-row Criteo TSV ({size:.0f} MiB); {load_line()}")
    print(f"  load_dataset, cache miss (parse + split + vocabularies + encode + write cache): {miss:.3f} s")
    print(f"  load_dataset, cache hit: median {statistics.median(hits):.3f} s, min {min(hits):.3f}, "
          f"max {max(hits):.3f} over {args.repeats}")


if __name__ == "__main__":
    main()
