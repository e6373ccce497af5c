"""Checkpoint-level collapse throughput and peak memory.

Writes an MLET checkpoint holding one n×k fp32 table (default n=4M, k=64 → 1 GiB) and a k→d projection,
then times ``collapse_checkpoint`` in a fresh subprocess (so its peak RSS is its own) and compares the
rate to one numpy copy of the same bytes. Repeats with a table twice as large to show that peak RSS
does not grow with the table.

    python benchmarks/bench_collapse.py [--rows 4000000] [--inner 64] [--dim 16] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from mlet_compress.atomic import atomic_path
from mlet_compress.checkpoint import PRODUCER
from mlet_compress.schema import CheckpointHeader, Factor, TableEntry
from mlet_compress.safetensors_io import StreamingWriter

# Peak RSS is read from /proc/self/status (VmHWM): unlike ru_maxrss it is not inherited from the parent.
HWM = "int(next(l for l in open('/proc/self/status') if l.startswith('VmHWM')).split()[1])"

CHILD = r"""
import json, sys, time
from mlet_compress import collapse_checkpoint
src, dst, chunk = sys.argv[1], sys.argv[2], int(sys.argv[3])
t = time.perf_counter()
collapse_checkpoint(src, dst, chunk_rows=chunk, force=True)
dt = time.perf_counter() - t
print(json.dumps({"seconds": dt, "peak_rss_kib": HWM}))
""".replace("HWM", HWM)

BASELINE = r"""
import json
import mlet_compress  # same imports as the child, nothing else
print(json.dumps({"peak_rss_kib": HWM}))
""".replace("HWM", HWM)


def write_mlet_checkpoint(path: Path, n: int, k: int, d: int, chunk: int = 1 << 20) -> None:
    """An MLET checkpoint written chunk by chunk (the generator itself never holds the table)."""
    entry = TableEntry.mlet("emb", Factor("emb.table", (n, k)), Factor("emb.proj", (d, k)))
    meta = CheckpointHeader({"emb": entry}).to_metadata(PRODUCER)
    g = torch.Generator().manual_seed(0)
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        w = StreamingWriter(fh, [("emb.table", torch.float32, (n, k)), ("emb.proj", torch.float32, (d, k))], meta)
        for a in range(0, n, chunk):
            w.write("emb.table", torch.randn(min(chunk, n - a), k, generator=g))
        w.write("emb.proj", torch.randn(d, k, generator=g) * 0.25)
        w.close()


def numpy_copy_seconds(nbytes: int, repeats: int) -> float:
    src = np.ones(nbytes // 4, dtype=np.float32)
    dst = np.empty_like(src)
    dst[:] = 0  # fault the pages in
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        np.copyto(dst, src)
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def write_floor_seconds(folder: str, nbytes: int, repeats: int) -> float:
    """Writing ``nbytes`` to a new file in ``folder`` and fsyncing it: the I/O any durable output pays."""
    buf = np.ones(nbytes // 4, dtype=np.float32)
    times = []
    for i in range(repeats):
        path = Path(folder) / f"floor{i}.bin"
        t = time.perf_counter()
        with open(path, "wb") as fh:
            fh.write(memoryview(buf))
            fh.flush()
            os.fsync(fh.fileno())
        times.append(time.perf_counter() - t)
        path.unlink()
    return statistics.median(times)


def run_child(code: str, *args: str) -> dict:
    out = subprocess.run([sys.executable, "-c", code, *args], check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=4_000_000)
    ap.add_argument("--inner", type=int, default=64)
    ap.add_argument("--dim", type=int, default=16)
    ap.add_argument("--chunk-rows", type=int, default=65536)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--dir", default=None, help="scratch folder (default: a temp dir)")
    args = ap.parse_args()
    base = run_child(BASELINE)["peak_rss_kib"]
    results = {}
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        for scale in (1, 2):
            n = args.rows * scale
            src, dst = Path(tmp) / f"mlet{scale}.safetensors", Path(tmp) / f"out{scale}.safetensors"
            write_mlet_checkpoint(src, n, args.inner, args.dim)
            table_bytes = n * args.inner * 4
            runs = [run_child(CHILD, str(src), str(dst), str(args.chunk_rows)) for _ in range(args.repeats if scale == 1 else 1)]
            secs = statistics.median(r["seconds"] for r in runs)
            peak = max(r["peak_rss_kib"] for r in runs)
            results[scale] = {"rows": n, "table_gib": table_bytes / 2**30, "seconds": secs,
                              "gb_per_s": table_bytes / secs / 1e9, "peak_rss_mib": peak / 1024,
                              "rss_over_import_mib": (peak - base) / 1024}
            if scale == 1:
                floor_s = write_floor_seconds(tmp, n * args.dim * 4, args.repeats)
            src.unlink()
            dst.unlink()
    copy_s = numpy_copy_seconds(args.rows * args.inner * 4, args.repeats)
    r1, r2 = results[1], results[2]
    copy_rate = args.rows * args.inner * 4 / copy_s / 1e9
    print(f"table {r1['rows']}x{args.inner} fp32 ({r1['table_gib']:.2f} GiB) -> d={args.dim}, chunk_rows={args.chunk_rows}")
    print(f"collapse: median {r1['seconds']:.3f} s over {args.repeats} runs = {r1['gb_per_s']:.2f} GB/s of input")
    print(f"numpy copy of the same bytes: median {copy_s:.3f} s = {copy_rate:.2f} GB/s")
    print(f"ratio collapse rate / copy rate: {r1['gb_per_s'] / copy_rate:.2f} (target >= 0.7)")
    print(f"output write+fsync floor ({r1['rows'] * args.dim * 4 / 2**20:.0f} MiB): median {floor_s:.3f} s; "
          f"collapse excluding it: {r1['table_gib'] * 2**30 / max(1e-9, r1['seconds'] - floor_s) / 1e9:.2f} GB/s "
          f"= {r1['table_gib'] * 2**30 / max(1e-9, r1['seconds'] - floor_s) / 1e9 / copy_rate:.2f} x copy rate")
    print(f"peak RSS: {r1['peak_rss_mib']:.0f} MiB at 1x ({r2['rows']//2} rows), {r2['peak_rss_mib']:.0f} MiB at 2x "
          f"({r2['rows']} rows); above a bare import: {r1['rss_over_import_mib']:.0f} vs {r2['rss_over_import_mib']:.0f} MiB")


if __name__ == "__main__":
    main()
