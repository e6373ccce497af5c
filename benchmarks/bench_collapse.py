"""Checkpoint-level collapse time against the I/O it cannot avoid, and its peak memory.

Writes an MLET checkpoint holding one n×k fp32 table (default n=4M, k=64 → 1 GiB) and a k→d projection,
then times ``collapse_checkpoint`` in a fresh subprocess (so its peak RSS is its own). The limit it is
divided by, measured in the same run on the same files: the **I/O floor** = reading the input file
from the page cache (``readinto`` a reused buffer) + writing the output's bytes to a new file and
fsyncing it. Also printed: the fp32 GEMM rate of the collapse's chunks alone (n×k @ k×d), the same
collapse through safetensors' own ``safe_open(...).get_slice`` chunks (time and peak RSS), and the
peak RSS with a table twice as large (it must not grow with the table).

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

from _common import load_line, median_seconds
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

SLICES = r"""
import json, sys, time
import torch
from safetensors import safe_open
src, chunk = sys.argv[1], int(sys.argv[2])
t = time.perf_counter()
with safe_open(src, "pt") as fh:
    sl, proj = fh.get_slice("emb.table"), fh.get_tensor("emb.proj")
    n = sl.get_shape()[0]
    for a in range(0, n, chunk):
        out = sl[a:min(n, a + chunk)] @ proj.T
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


def read_floor_seconds(path: Path, repeats: int, chunk: int = 64 << 20) -> float:
    """Reading ``path`` from the page cache into a reused buffer: the input I/O any collapse pays."""
    buf = bytearray(chunk)
    view = memoryview(buf)
    times = []
    for _ in range(repeats + 1):
        t = time.perf_counter()
        with open(path, "rb", buffering=0) as fh:
            while fh.readinto(view):
                pass
        times.append(time.perf_counter() - t)
    return statistics.median(times[1:])  # the first read may still fault pages into the cache


def gemm_seconds(n: int, k: int, d: int, chunk: int, repeats: int) -> float:
    """The collapse's arithmetic alone: n×k @ k×d in ``chunk``-row pieces of a warm table."""
    g = torch.Generator().manual_seed(1)
    table, proj = torch.randn(min(n, 4 * chunk), k, generator=g), torch.randn(d, k, generator=g)
    out = torch.empty(chunk, d)
    pieces = n // table.shape[0]

    def run() -> None:
        for _ in range(pieces):
            for a in range(0, table.shape[0], chunk):
                torch.mm(table[a:a + chunk], proj.T, out=out[: min(chunk, table.shape[0] - a)])

    return median_seconds(run, repeats) * n / (pieces * table.shape[0])


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
    ap.add_argument("--no-slices", dest="slices", action="store_false", help="skip the safetensors get_slice comparison")
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
                write_s = write_floor_seconds(tmp, dst.stat().st_size, args.repeats)
                read_s = read_floor_seconds(src, args.repeats)
                sl = [run_child(SLICES, str(src), str(args.chunk_rows)) for _ in range(1 if args.slices else 0)]
            src.unlink()
            dst.unlink()
    gemm_s = gemm_seconds(args.rows, args.inner, args.dim, args.chunk_rows, args.repeats)
    r1, r2 = results[1], results[2]
    floor_s = read_s + write_s
    print(f"table {r1['rows']}x{args.inner} fp32 ({r1['table_gib']:.2f} GiB) -> d={args.dim}, chunk_rows={args.chunk_rows}, "
          f"torch threads={torch.get_num_threads()}; {load_line()}")
    print(f"collapse: median {r1['seconds']:.3f} s over {args.repeats} runs = {r1['gb_per_s']:.2f} GB/s of input")
    print(f"I/O floor: read input from page cache {read_s:.3f} s + write and fsync output "
          f"({r1['rows'] * args.dim * 4 / 2**20:.0f} MiB) {write_s:.3f} s = {floor_s:.3f} s (medians)")
    print(f"collapse / I/O floor: {r1['seconds'] / floor_s:.2f}x")
    print(f"GEMM alone (n×{args.inner} @ {args.inner}×{args.dim} in {args.chunk_rows}-row chunks, warm): {gemm_s:.3f} s "
          f"= {r1['table_gib'] * 2**30 / gemm_s / 1e9:.2f} GB/s of input")
    if sl:
        print(f"safetensors get_slice chunks + same GEMM: {sl[0]['seconds']:.3f} s, peak RSS "
              f"{(sl[0]['peak_rss_kib'] - base) / 1024:.0f} MiB above a bare import")
    print(f"peak RSS: {r1['peak_rss_mib']:.0f} MiB at 1x ({r2['rows']//2} rows), {r2['peak_rss_mib']:.0f} MiB at 2x "
          f"({r2['rows']} rows); above a bare import: {r1['rss_over_import_mib']:.0f} vs {r2['rss_over_import_mib']:.0f} MiB")


if __name__ == "__main__":
    main()
