"""Shared runner of the sweep examples: the quality-vs-size sweep behind docs/results.md on a shared sample."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from mlet_compress.data import DataSpec
from mlet_compress.sweep import SweepConfig, run_sweep

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
STAGES = "q8,q4,q8row,svd:energy=0.95,svd:rank=2,svd:rank=4"


def _csv(text: str, kind=int) -> tuple:
    return tuple(kind(v) for v in text.split(",") if v.strip())


def main(doc: str, data: Path, fmt: str, *, hash_ratios: str = "") -> int:
    """Parse the example's flags, run (or resume) the sweep and print where the report is."""
    ap = argparse.ArgumentParser(description=doc.splitlines()[0])
    ap.add_argument("--data", type=Path, default=data)
    ap.add_argument("--model", default="dlrm")
    ap.add_argument("--dims", default="2,4,8,16")
    ap.add_argument("--mlet-k", default="32,64")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--emb-lr-mults", default="1,4,10")
    ap.add_argument("--stages", default=STAGES)
    ap.add_argument("--hash-ratios", default=hash_ratios)
    ap.add_argument("--epochs", type=int, default=15)
    ap.add_argument("--patience", type=int, default=3)
    ap.add_argument("--jobs", type=int, default=1)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--out", type=Path, default=Path("sweeps") / fmt)
    args = ap.parse_args()
    if not args.data.exists():
        print(f"data not found: {args.data}\nPut the shared data next to the repository (../shared/data) or pass --data.")
        return 0
    cfg = SweepConfig(
        models=tuple(args.model.split(",")), dims=_csv(args.dims), ks=_csv(args.mlet_k), seeds=_csv(args.seeds),
        tune_baseline=True, emb_lr_mults=_csv(args.emb_lr_mults, float), stages=tuple(args.stages.split(",")),
        hash_ratios=_csv(args.hash_ratios, float), epochs=args.epochs, patience=args.patience, calibrate=True,
        data=DataSpec(path=str(args.data), format=fmt),
    )
    t0 = time.perf_counter()
    res = run_sweep(cfg, args.out, jobs=args.jobs, threads=args.threads)
    print(f"{len(res.rows)} rows, {res.trained} cells trained, {res.reused} read back, {time.perf_counter() - t0:.0f}s")
    print("report:", args.out / "report.md")
    for note in res.notes:
        print(note)
    return 0
