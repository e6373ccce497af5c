"""Quantized pooled-lookup latency: the default QuantizedEmbeddingBag vs PyTorch's FBGEMM row-wise kernels.

For every bag size (``--bags``, default 1 4 16 64) and thread count (``--threads``, default 1 2), one "step"
looks up a batch of ``--batch`` bags (sum pooling) in each of ``--tables`` tables, as a DLRM forward does.
Variants (all on the same indices, timed interleaved, median of ``--repeats`` rounds of ``--iters`` steps):

* ``fbgemm int8`` / ``fbgemm int4``: FBGEMM's own row-wise tables (``embedding_bag_{byte,4bit}_prepack``,
  asymmetric min/max, fp32 resp. fp16 scale/bias per row) pooled by ``embedding_bag_{byte,4bit}_rowwise_offsets``
  — the limit each of our int8 / int4 variants is divided by (target ≤ 1.3);
* ``fp32``: ``nn.EmbeddingBag`` on the float table;
* ``ours int8|int4 table|row[-fp16]``: ``QuantizedEmbeddingBag`` as built by ``from_float`` (its default
  layout: FBGEMM's fused rows holding our symmetric codes, the only in-memory copy);
* with ``--packed``: the same modules after ``use_fused_kernel(False)`` (the pure-torch path).

It also prints each variant's in-memory and state-dict (checkpoint) bytes per row, and checks that the
default lookups stay within the fused-accumulation bound of the pure-torch ones.

    python benchmarks/bench_lookup.py                      # 8 tables × 200k × 64, batch 4096, bags 1/4/16/64, threads 1/2
    python benchmarks/bench_lookup.py --bags 1 --threads 1 --tables 26
"""

from __future__ import annotations

import argparse
import time

import torch
from torch import nn

from _common import interleaved_medians, load_line
from mlet_compress.layers.quantized import QuantizedEmbeddingBag
from mlet_compress.ops.fbgemm_ref import fbgemm_available

OPS = torch.ops.quantized
FBGEMM = {8: (OPS.embedding_bag_byte_prepack, OPS.embedding_bag_byte_rowwise_offsets),
          4: (OPS.embedding_bag_4bit_prepack, OPS.embedding_bag_4bit_rowwise_offsets)}


def build(args) -> tuple[dict, dict, list]:
    """Modules per variant name, FBGEMM tables per bit width, and the float tables."""
    g = torch.Generator().manual_seed(0)
    fp32 = [nn.EmbeddingBag(args.rows, args.dim, mode="sum") for _ in range(args.tables)]
    with torch.no_grad():
        for t in fp32:
            t.weight.normal_(generator=g)
    ours = {}
    for bits in args.bits:
        for gran, sd in (("table", "fp32"), ("row", "fp32"), ("row", "fp16")):
            name = f"ours int{bits} {gran}" + ("-fp16" if sd == "fp16" else "")
            ours[name] = [QuantizedEmbeddingBag.from_float(t, bits=bits, granularity=gran, scale_dtype=sd) for t in fp32]
    if args.packed:
        for name in list(ours):
            ours[name + " packed"] = [type(m).from_float(t, bits=m.bits, granularity=m.granularity,
                                                         scale_dtype="fp16" if "fp16" in name else "fp32").use_fused_kernel(False)
                                      for m, t in zip(ours[name], fp32)]
    fb = {bits: [FBGEMM[bits][0](t.weight.detach()) for t in fp32] for bits in args.bits}
    return ours, fb, fp32


def state_bytes(mod) -> int:
    return sum(t.numel() * t.element_size() for t in mod.state_dict().values())


def held_bytes(mod) -> int:
    return sum(b.numel() * b.element_size() for b in mod.buffers())


def bound_ratio(m, idx: torch.Tensor, offsets: torch.Tensor, bag: int) -> str:
    """max |default − pure-torch| ÷ twice the accumulation bound of tests/test_quantized_lookup.py (≤ 1 expected).

    Each path is within (2L + 5)·2^-24·Σ s_i·2^(c−1) of the exact pooled sum of a bag of L rows.
    """
    twin = type(m)(m.num_embeddings, m.embedding_dim, bits=m.bits, granularity=m.granularity, mode="sum",
                   scale_dtype=m.scale_dtype).use_fused_kernel(False)
    twin.load_state_dict(m.state_dict())
    diff = (m(idx, offsets).double() - twin(idx, offsets).double()).abs()
    cb = 8 if m.bits > 4 else 4 if m.bits > 2 else 2
    s = m.scale.double().expand(m.num_embeddings)[idx].view(-1, bag).sum(1, keepdim=True)
    bound = 2 * (2 * bag + 5) * 2.0**-24 * 2 ** (cb - 1) * s
    return f"{float((diff / bound).max()):.2g}"


def run(args, ours, fb, fp32, threads: int, bag: int) -> dict[str, float]:
    torch.set_num_threads(threads)
    g = torch.Generator().manual_seed(bag)
    n_idx = args.batch * bag
    idx = [torch.randint(0, args.rows, (n_idx,), generator=g) for _ in range(args.tables)]
    offsets = torch.arange(0, n_idx, bag)
    fns = {"fp32": lambda: [t(i, offsets) for t, i in zip(fp32, idx)]}
    for bits, tabs in fb.items():
        op = FBGEMM[bits][1]
        fns[f"fbgemm int{bits}"] = (lambda tabs=tabs, op=op:
                                   [op(p, i, offsets, False, 0, False, None, None, False) for p, i in zip(tabs, idx)])
    for name, mods in ours.items():
        fns[name] = lambda mods=mods: [m(i, offsets) for m, i in zip(mods, idx)]
    with torch.no_grad():
        clock = time.process_time if args.clock == "cpu" else time.perf_counter
        times = interleaved_medians(fns, args.iters, args.repeats, clock)
        times["bound"] = {name: bound_ratio(mods[0], idx[0], offsets, bag) for name, mods in ours.items()
                          if "packed" not in name}
    return times


def report(args, ours, results) -> None:
    print(f"{args.tables} tables × {args.rows} rows × {args.dim}, batch {args.batch} bags, sum pooling; "
          f"µs per step (all tables, {args.clock} clock), median of {args.repeats} rounds × {args.iters} steps; "
          f"{load_line()}")
    for threads in args.threads:
        print(f"\n-- {threads} thread(s): µs/step (÷ FBGEMM of the same bit width; target ≤ 1.3) --")
        print(f"  {'variant':28s}" + "".join(f"{'bag ' + str(b):>20s}" for b in args.bags))
        names = ["fp32"] + [f"fbgemm int{b}" for b in args.bits] + list(ours)
        for name in names:
            cells = []
            for bag in args.bags:
                r = results[threads, bag]
                t = r[name] * 1e6
                if name.startswith("ours"):
                    bits = int(name.split()[1][3:])
                    cells.append(f"{t:10.0f} ({t / (r[f'fbgemm int{bits}'] * 1e6):5.2f}x)")
                elif name == "fp32":
                    cells.append(f"{t:10.0f} ({t / (r['fbgemm int8'] * 1e6) if 8 in args.bits else 0:5.2f}x)")
                else:
                    cells.append(f"{t:10.0f}        ")
            print(f"  {name:28s}" + "".join(f"{c:>20s}" for c in cells))
    print("\n(fp32's ratio is ÷ FBGEMM int8.) default vs pure-torch lookups, max |diff| ÷ accumulation bound "
          "(≤ 1 expected), per bag size at the last thread count:")
    last = args.threads[-1]
    for name in (n for n in ours if "packed" not in n):
        print(f"  {name:28s}" + "".join(f"{results[last, b]['bound'][name]:>10s}" for b in args.bags))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tables", type=int, default=8)
    ap.add_argument("--rows", type=int, default=200_000)
    ap.add_argument("--dim", type=int, default=64)
    ap.add_argument("--batch", type=int, default=4096)
    ap.add_argument("--bags", type=int, nargs="+", default=[1, 4, 16, 64])
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--bits", type=int, nargs="+", default=[8, 4], choices=[8, 4])
    ap.add_argument("--iters", type=int, default=10)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--packed", action="store_true", help="also time the pure-torch path (use_fused_kernel(False))")
    ap.add_argument("--clock", choices=["wall", "cpu"], default="wall",
                    help="wall: latency (quiet machine); cpu: process CPU seconds (robust on a loaded machine, 1 thread)")
    args = ap.parse_args()
    if not fbgemm_available():
        raise SystemExit("this torch build has no FBGEMM quantized embedding-bag kernels")
    ours, fb, fp32 = build(args)
    print("bytes per row — in memory (state dict = checkpoint):")
    for name, mods in ours.items():
        m = mods[0]
        print(f"  {name:28s} {held_bytes(m) / m.num_embeddings:6.2f} ({state_bytes(m) / m.num_embeddings:6.2f})")
    for bits, tabs in fb.items():
        print(f"  {'fbgemm int' + str(bits):28s} {tabs[0].shape[1]:6.2f}")
    print(f"  {'fp32':28s} {4 * args.dim:6.2f}")
    results = {(t, b): run(args, ours, fb, fp32, t, b) for t in args.threads for b in args.bags}
    report(args, ours, results)


if __name__ == "__main__":
    main()
