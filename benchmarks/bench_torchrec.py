"""TorchRec engine on CPU: MLET-EBC step time, peak training memory, and the fp16-scale error of the quant export.

1. Step time, DLRM shape (torchrec ``DLRM``, 26 tables with Criteo-Kaggle vocabularies capped at
   ``--max-rows``, 13 dense features, one id per feature, Zipf-like ids), trained the TorchRec way:
   ``DistributedModelParallel`` (world size 1, gloo), table-wise, FBGEMM fused EXACT_ROWWISE_ADAGRAD for the
   tables, SGD for the dense part (MLET projections included). Variants: plain EBC d=16, plain EBC d=64,
   MLET-EBC k=64→d=16; steps interleaved round-robin in one process; medians.
2. Peak training memory (VmHWM above the same process's baseline after imports, each variant in a fresh
   subprocess; models built on the meta device so DMP allocates every table once): single-layer d=16 with
   row-wise Adagrad, MLET k=64 with row-wise Adagrad, MLET k=64 with full Adagrad (EXACT_ADAGRAD).
3. fp16 scales: relative L2 error the FBGEMM export (fp16 scale) adds to our quantized tables, next to
   the quantization error itself and to FBGEMM's own asymmetric row-wise quantization of the same table.

Usage:
    python benchmarks/bench_torchrec.py [--batch 512] [--steps 30] [--max-rows 100000] [--mem-max-rows 500000]
                                        [--threads 2] [--skip-memory] [--skip-quant]
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import time

import torch
import torch.distributed as dist
import torch.nn.functional as F

from mlet_compress.integrations.torchrec import (EmbeddingBagCollection, EmbeddingBagConfig, KeyedJaggedTensor,
                                                 MLETEmbeddingBagCollection, QuantTable, fp16_scale_error, shard_model,
                                                 to_torchrec_quant)

CRITEO_VOCABS = [1460, 583, 10131227, 2202608, 305, 24, 12517, 633, 3, 93145, 5683, 8351593, 3194, 27, 14992,
                 5461306, 10, 5652, 2173, 4, 7046547, 18, 15, 286181, 105, 142572]
HWM = "VmHWM"
VARIANTS = {"plain d=16": (16, None, "rowwise_adagrad"), "plain d=64": (64, None, "rowwise_adagrad"),
            "MLET k=64 d=16": (16, 64, "rowwise_adagrad"), "MLET k=64 d=16, full Adagrad": (16, 64, "adagrad")}


def peak_kib() -> int:
    """VmHWM of this process (not inherited from the parent, unlike ru_maxrss)."""
    with open("/proc/self/status") as f:
        return int(next(line for line in f if line.startswith(HWM)).split()[1])


def init_single_process_group() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=0, world_size=1)


def build(d: int, k, optimizer: str, vocabs: list[int]):
    """DLRM over a plain or MLET EBC (meta device), sharded by DMP; returns (dmp, dense optimizer)."""
    from torchrec.models.dlrm import DLRM

    cfgs = [EmbeddingBagConfig(name=f"t{i}", embedding_dim=d, num_embeddings=v, feature_names=[f"f{i}"])
            for i, v in enumerate(vocabs)]
    meta = torch.device("meta")
    ebc = EmbeddingBagCollection(cfgs, device=meta) if k is None else MLETEmbeddingBagCollection(cfgs, k, device=meta)
    torch.manual_seed(0)
    model = DLRM(embedding_bag_collection=ebc, dense_in_features=13, dense_arch_layer_sizes=[512, 256, d],
                 over_arch_layer_sizes=[512, 256, 1])
    dmp = shard_model(model, "table_wise", optimizer, learning_rate=0.01)
    dense = [p for n, p in dmp.named_parameters() if "embedding_bags" not in n]
    return dmp, torch.optim.SGD(dense, lr=0.01)


def batches(vocabs: list[int], batch: int, n: int):
    g = torch.Generator().manual_seed(1)
    out = []
    for _ in range(n):
        u = torch.rand(len(vocabs), batch, generator=g)  # Zipf-like: most lookups hit small ids
        ids = torch.stack([(torch.tensor(float(v)) ** u[i]).long().sub(1).clamp(0, v - 1) for i, v in enumerate(vocabs)])
        kjt = KeyedJaggedTensor.from_lengths_sync([f"f{i}" for i in range(len(vocabs))], ids.reshape(-1),
                                                  torch.ones(ids.numel(), dtype=torch.long))
        out.append((torch.randn(batch, 13, generator=g), kjt, (torch.rand(batch, generator=g) < 0.25).float()))
    return out


def step(dmp, opt, b) -> float:
    t = time.perf_counter()
    loss = F.binary_cross_entropy_with_logits(dmp(b[0], b[1]).squeeze(1), b[2])
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    return time.perf_counter() - t


def sparse_step(dmp, _opt, b) -> float:
    """The embedding part alone: (MLET-)EBC forward, backward with the fused table update (and projection grads)."""
    ebc = next(m for n, m in dmp.named_modules() if n.endswith("sparse_arch.embedding_bag_collection"))
    t = time.perf_counter()
    ebc(b[1]).values().square().sum().backward()
    for p in ebc.parameters():
        p.grad = None
    return time.perf_counter() - t


def bench_steps(args) -> None:
    vocabs = [min(v, args.max_rows) for v in CRITEO_VOCABS]
    names = ["plain d=16", "plain d=64", "MLET k=64 d=16"]
    models = {n: build(*VARIANTS[n], vocabs) for n in names}
    data = batches(vocabs, args.batch, args.steps)
    print(f"step time, median of {args.steps - 3} interleaved steps (batch {args.batch}, {torch.get_num_threads()} "
          f"threads, {sum(vocabs):,} rows, DMP table-wise, fused EXACT_ROWWISE_ADAGRAD):")
    for label, fn in (("DLRM training step", step), ("embedding part only", sparse_step)):
        times = {n: [] for n in names}
        for i, b in enumerate(data):
            for n in names[i % 3:] + names[:i % 3]:  # rotate the order every step
                times[n].append(fn(*models[n], b))
        med = {n: statistics.median(t[3:]) * 1e3 for n, t in times.items()}  # drop warm-up steps
        low = {n: min(t[3:]) * 1e3 for n, t in times.items()}  # the least disturbed step, for a loaded machine
        print(f"  {label}: " + "   ".join(f"{n} {med[n]:.2f} ms (min {low[n]:.2f})" for n in names))
        for what, v in (("medians", med), ("minima", low)):
            mlet = v["MLET k=64 d=16"]
            print(f"    {what}: MLET / plain d=16 = {mlet / v['plain d=16']:.2f}   "
                  f"MLET / plain d=64 = {mlet / v['plain d=64']:.2f}")


def memory_child(variant: str, max_rows: int, batch: int, steps: int) -> None:
    torch.set_num_threads(int(os.environ.get("BENCH_THREADS", "1")))
    init_single_process_group()
    vocabs = [min(v, max_rows) for v in CRITEO_VOCABS]
    data = batches(vocabs, batch, steps)
    base = peak_kib()
    dmp, opt = build(*VARIANTS[variant], vocabs)
    for b in data:
        step(dmp, opt, b)
    print(json.dumps({"peak_kib": peak_kib() - base, "rows": sum(vocabs)}))
    dist.destroy_process_group()


def bench_memory(args) -> None:
    names = ["plain d=16", "MLET k=64 d=16", "MLET k=64 d=16, full Adagrad"]
    peaks, rows = {}, 0
    for n in names:
        cmd = [sys.executable, __file__, "--memory-child", n, "--mem-max-rows", str(args.mem_max_rows),
               "--batch", str(args.batch)]
        env = dict(os.environ, BENCH_THREADS=str(torch.get_num_threads()))
        out = subprocess.run(cmd, capture_output=True, text=True, check=True, env=env).stdout.strip().splitlines()[-1]
        res = json.loads(out)
        peaks[n], rows = res["peak_kib"] / 1024, res["rows"]
    print(f"peak training memory above baseline ({rows:,} rows, 5 steps, batch {args.batch}):")
    for n in names:
        print(f"  {n:30s} {peaks[n]:9.1f} MiB  = {peaks[n] / peaks['plain d=16']:.2f} x single-layer d=16")


def bench_quant(rows: int = 20000, d: int = 16) -> None:
    from mlet_compress.ops.quant import quantize_tensor

    g = torch.Generator().manual_seed(0)
    tables = {f"uniform ±1/sqrt({n:.0e})": (torch.rand(rows, d, generator=g) * 2 - 1) / n ** 0.5 for n in (1e4, 1e6, 1e8)}
    tables["normal std 0.5"] = torch.randn(rows, d, generator=g) * 0.5
    print(f"fp16 scale error of the FBGEMM export ({rows}×{d} tables; relative L2 errors ‖·‖/‖W‖):")
    print(f"  {'table':24s} {'bits':>4s} {'gran':>5s} {'quant (ours)':>13s} {'+fp16 scale':>12s} {'measured':>10s} {'fbgemm own':>11s}")
    for label, w in tables.items():
        for bits in (8, 4):
            fb = torch.ops.fbgemm.FusedNBitRowwiseQuantizedSBHalfToFloat(
                torch.ops.fbgemm.FloatOrHalfToFusedNBitRowwiseQuantizedSBHalf(w, bits), bits)
            fb_err = float((fb - w).norm() / w.norm())
            for gran in ("table", "row"):
                qt = quantize_tensor(w, bits=bits, granularity=gran)
                t = QuantTable("t", qt.packed, qt.scale, bits, d)
                qebc = to_torchrec_quant([t])
                kjt = KeyedJaggedTensor.from_lengths_sync(["t"], torch.arange(rows), torch.ones(rows, dtype=torch.long))
                deq = qt.dequantize()
                measured = float((qebc(kjt).values() - deq).norm() / deq.norm())
                print(f"  {label:24s} {bits:4d} {gran:>5s} {qt.l2_error / float(w.norm()):13.3e} "
                      f"{fp16_scale_error(t):12.3e} {measured:10.3e} {fb_err:11.3e}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch", type=int, default=512)
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--max-rows", type=int, default=100_000)
    p.add_argument("--mem-max-rows", type=int, default=500_000)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--skip-memory", action="store_true")
    p.add_argument("--skip-quant", action="store_true")
    p.add_argument("--memory-child", default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.memory_child:
        return memory_child(args.memory_child, args.mem_max_rows, args.batch, 5)
    print("command: python " + " ".join(sys.argv))
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}")
    init_single_process_group()
    bench_steps(args)
    dist.destroy_process_group()
    if not args.skip_memory:
        bench_memory(args)
    if not args.skip_quant:
        bench_quant()


if __name__ == "__main__":
    main()
