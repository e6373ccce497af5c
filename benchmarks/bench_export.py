"""Exported lookups: file sizes against the checkpoint, export time, and onnxruntime latency against the torch modules.

For each table form (fp32, int8 per row, 4-bit per row, 2-bit per table) a checkpoint of ``--tables`` sum bags
(``--rows`` × ``--dim``) is written, then exported to ONNX (4/2-bit codes packed, and unpacked to int8) and to
a torch.export program. Reported per form: checkpoint bytes, each export's bytes and its ratio to the
checkpoint, export seconds, and the median step latency (µs; one step = a batch of ``--batch`` bags of
``--bag`` ids in every table) of onnxruntime (``intra_op_num_threads = --threads``) ÷ the torch lookup
modules the checkpoint loads as (same thread count, same inputs, medians of ``--repeats``).

    python benchmarks/bench_export.py                       # 8 tables × 100k × 32, batch 2048, bag 16, 1 thread
    python benchmarks/bench_export.py --bag 1 --threads 2
    python benchmarks/bench_export.py --model               # also a whole DLRM with 4-bit tables
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

import mlet_compress as mc
from mlet_compress.layers.quantized import to_quantized

FORMS = {"fp32": None, "q8row": (8, "row"), "q4row": (4, "row"), "q2table": (2, "table")}


def step_time(fn, iters: int, repeats: int) -> float:
    """Median seconds per call (µs) over ``repeats`` runs of ``iters`` calls, after a warm-up."""
    for _ in range(max(2, iters // 5)):
        fn()
    runs = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(iters):
            fn()
        runs.append((time.perf_counter() - t0) / iters)
    return statistics.median(runs) * 1e6


def build(form: str, args, gen: torch.Generator) -> nn.ModuleDict:
    tables = nn.ModuleDict()
    for i in range(args.tables):
        t = nn.EmbeddingBag(args.rows, args.dim, mode="sum")
        with torch.no_grad():
            t.weight.normal_(generator=gen)
        tables[f"t{i}"] = t if FORMS[form] is None else to_quantized(t, bits=FORMS[form][0], granularity=FORMS[form][1])
    return tables


def timed(fn):
    t0 = time.perf_counter()
    res = fn()
    return res, time.perf_counter() - t0


def measure(form: str, args, folder: Path, gen: torch.Generator) -> None:
    import onnxruntime as ort

    ck = mc.save_checkpoint(build(form, args, gen), folder / f"{form}.safetensors")
    size = os.path.getsize(ck)
    mods = mc.load_lookup_modules(ck)
    exports = {"onnx": timed(lambda: mc.export_onnx(ck, folder / f"{form}.onnx"))}
    if FORMS[form] and FORMS[form][0] < 8:
        exports["onnx int8"] = timed(lambda: mc.export_onnx(ck, folder / f"{form}.int8.onnx", low_bit="int8"))
    exports["pt2"] = timed(lambda: mc.export_program(ck, folder / f"{form}.pt2"))
    n = args.batch * args.bag
    idx = {k: torch.randint(0, args.rows, (n,), generator=gen) for k in mods}
    offsets = torch.arange(0, n, args.bag)
    feeds = {f"{k}.indices": v.numpy() for k, v in idx.items()} | {f"{k}.offsets": offsets.numpy() for k in mods}
    with torch.no_grad():
        t_torch = step_time(lambda: [m(idx[k], offsets) for k, m in mods.items()], args.iters, args.repeats)
    print(f"{form:8s} checkpoint {size:>12,} B   torch modules {t_torch:9.0f} µs/step")
    for what, (res, secs) in exports.items():
        line = f"  {what:10s} {res.bytes:>12,} B  {res.bytes / size:5.3f}× checkpoint  export {secs:5.1f} s"
        if what.startswith("onnx"):
            so = ort.SessionOptions()
            so.intra_op_num_threads, so.inter_op_num_threads = args.threads, 1
            sess = ort.InferenceSession(str(res.output), so, providers=["CPUExecutionProvider"])
            got = sess.run(None, feeds)
            want = mods["t0"](idx["t0"], offsets).detach()
            err = float(np.abs(got[0] - want.numpy()).max())
            t_ort = step_time(lambda: sess.run(None, feeds), args.iters, args.repeats)
            line += f"  onnxruntime {t_ort:9.0f} µs/step = {t_ort / t_torch:5.2f}× torch modules (max |diff| {err:.1e})"
        print(line)


def measure_model(args, folder: Path, gen: torch.Generator) -> None:
    """A whole DLRM (``--tables`` fields × ``--rows`` ids, d = ``--dim``, 13 dense features), 4-bit per-row tables."""
    import onnxruntime as ort

    from mlet_compress.models import build_model

    model = build_model("dlrm", vocab_sizes=[args.rows] * args.tables, num_dense=13, embed_dim=args.dim).eval()
    mc.compress_(model, mc.QuantConfig(bits=4, granularity="row"))
    ck = mc.save_checkpoint(model, folder / "dlrm.q4row.safetensors", model_info={"name": "dlrm", "config": model.config})
    size = os.path.getsize(ck)
    onnx_res, t_onnx = timed(lambda: mc.export_onnx(ck, folder / "dlrm.onnx", model_config={"name": "dlrm", "config": model.config}))
    pt2_res, t_pt2 = timed(lambda: mc.export_program(ck, folder / "dlrm.pt2", model_config={"name": "dlrm", "config": model.config}))
    dense = torch.rand(args.batch, 13, generator=gen)
    sparse = torch.randint(0, args.rows, (args.batch, args.tables), generator=gen)
    so = ort.SessionOptions()
    so.intra_op_num_threads, so.inter_op_num_threads = args.threads, 1
    sess = ort.InferenceSession(str(onnx_res.output), so, providers=["CPUExecutionProvider"])
    feeds = {"dense": dense.numpy(), "sparse": sparse.numpy()}
    with torch.no_grad():
        err = float(np.abs(sess.run(None, feeds)[0] - model(dense, sparse).numpy()).max())
        t_torch = step_time(lambda: model(dense, sparse), args.iters, args.repeats)
    t_ort = step_time(lambda: sess.run(None, feeds), args.iters, args.repeats)
    print(f"dlrm q4row checkpoint {size:>12,} B   torch model {t_torch:9.0f} µs/batch of {args.batch}")
    print(f"  onnx       {onnx_res.bytes:>12,} B  {onnx_res.bytes / size:5.3f}× checkpoint  export {t_onnx:5.1f} s"
          f"  onnxruntime {t_ort:9.0f} µs/batch = {t_ort / t_torch:5.2f}× torch model (max |diff| {err:.1e})")
    print(f"  pt2        {pt2_res.bytes:>12,} B  {pt2_res.bytes / size:5.3f}× checkpoint  export {t_pt2:5.1f} s")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tables", type=int, default=8)
    ap.add_argument("--rows", type=int, default=100_000)
    ap.add_argument("--dim", type=int, default=32)
    ap.add_argument("--batch", type=int, default=2048)
    ap.add_argument("--bag", type=int, default=16)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--iters", type=int, default=10)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--model", action="store_true", help="also a whole DLRM with 4-bit tables (ONNX + pt2)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    print(f"{args.tables} sum bags × {args.rows:,} rows × {args.dim}; batch {args.batch} bags of {args.bag} ids; "
          f"{args.threads} thread(s); medians of {args.repeats} × {args.iters} steps")
    gen = torch.Generator().manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        for form in FORMS:
            measure(form, args, Path(tmp), gen)
        if args.model:
            measure_model(args, Path(tmp), gen)


if __name__ == "__main__":
    main()
