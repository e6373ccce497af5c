"""Training-step time of MLET vs single-layer embeddings, DLRM shape (26 tables, 13 dense, sparse grads).

Reports the median step time (forward + backward + SGD step, sparse table gradients) of:

* single-layer d=16, single-layer d=64, MLET k=64 d=16 (the issue's targets: MLET/single16 <= 1.25,
  MLET/single64 <= 1.05);
* where the MLET time goes: the 26 per-table projections are timed alone (forward + backward of
  ``rows @ proj.T`` for every table) next to one batched ``bmm`` doing the same work.

Table sizes are Criteo-Kaggle's vocabularies capped at ``--max-rows`` (step time depends on the rows
touched, not the table size; the cap keeps memory small). All variants run in one process, interleaved
round-robin so background load affects them alike.

Usage:
    python benchmarks/bench_train_step.py [--batch 128] [--steps 60] [--max-rows 100000] [--threads N]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

from mlet_compress import MLETConfig, wrap
from mlet_compress.models import build_model

CRITEO_VOCABS = [1460, 583, 10131227, 2202608, 305, 24, 12517, 633, 3, 93145, 5683, 8351593, 3194, 27, 14992,
                 5461306, 10, 5652, 2173, 4, 7046547, 18, 15, 286181, 105, 142572]


def make(dim: int, k: int, vocabs: list[int]):
    torch.manual_seed(0)
    model = build_model("dlrm", vocab_sizes=vocabs, num_dense=13, embed_dim=dim, sparse=True,
                        bottom_mlp=[512, 256, 128])
    if k:
        wrap(model, MLETConfig(inner_dim=k, init_std=0.25))
    return model, torch.optim.SGD(model.parameters(), lr=0.01)


def batches(vocabs: list[int], batch: int, n: int):
    g = torch.Generator().manual_seed(1)
    out = []
    for _ in range(n):
        # Zipf-like ids: most lookups hit small ids, as in CTR data
        u = torch.rand(batch, len(vocabs), generator=g)
        ids = torch.stack([(torch.tensor(float(v)) ** u[:, i]).long().sub(1).clamp(0, v - 1) for i, v in enumerate(vocabs)], 1)
        out.append((torch.randn(batch, 13, generator=g), ids, (torch.rand(batch, generator=g) < 0.25).float()))
    return out


def step(model, opt, b) -> float:
    t = time.perf_counter()
    loss = F.binary_cross_entropy_with_logits(model(b[0], b[1]), b[2])
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    return time.perf_counter() - t


def projection_probe(batch: int, k: int, d: int, tables: int, reps: int) -> tuple[float, float]:
    """Median seconds of 26 separate ``rows @ proj.T`` (fwd+bwd) vs one batched bmm of the same shapes."""
    rows = [torch.randn(batch, k, requires_grad=True) for _ in range(tables)]
    projs = [torch.randn(d, k, requires_grad=True) for _ in range(tables)]
    rows_b = torch.randn(tables, batch, k, requires_grad=True)
    proj_b = torch.randn(tables, d, k, requires_grad=True)
    sep, bat = [], []
    for _ in range(reps):
        t = time.perf_counter()
        torch.stack([r @ p.T for r, p in zip(rows, projs)], 1).sum().backward()
        sep.append(time.perf_counter() - t)
        t = time.perf_counter()
        torch.bmm(rows_b, proj_b.transpose(1, 2)).sum().backward()
        bat.append(time.perf_counter() - t)
    return statistics.median(sep), statistics.median(bat)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--warmup", type=int, default=10)
    ap.add_argument("--max-rows", type=int, default=100_000)
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    vocabs = [min(v, args.max_rows) for v in CRITEO_VOCABS]
    variants = {"single d=16": (16, 0), "single d=64": (64, 0), "MLET k=64 d=16": (16, 64)}
    built = {name: make(d, k, vocabs) for name, (d, k) in variants.items()}
    data = batches(vocabs, args.batch, args.warmup + args.steps)
    times: dict[str, list[float]] = {name: [] for name in variants}
    for i, b in enumerate(data):
        for name, (model, opt) in built.items():  # round-robin: background load hits all variants alike
            dt = step(model, opt, b)
            if i >= args.warmup:
                times[name].append(dt)
    med = {name: statistics.median(ts) for name, ts in times.items()}
    print(f"DLRM, 26 tables (Criteo vocabularies capped at {args.max_rows:,} rows), 13 dense, batch {args.batch}, "
          f"sparse SGD, {torch.get_num_threads()} threads, median of {args.steps} steps")
    for name, m in med.items():
        print(f"  {name:16s} {m * 1e3:8.2f} ms/step")
    mlet = med["MLET k=64 d=16"]
    print(f"  MLET / single d=16 = {mlet / med['single d=16']:.3f}   (target <= 1.25)")
    print(f"  MLET / single d=64 = {mlet / med['single d=64']:.3f}   (target <= 1.05)")
    sep, bat = projection_probe(args.batch, 64, 16, len(vocabs), args.steps)
    print(f"  26 per-table projections (fwd+bwd): {sep * 1e3:.2f} ms; one batched bmm: {bat * 1e3:.2f} ms")


if __name__ == "__main__":
    main()
