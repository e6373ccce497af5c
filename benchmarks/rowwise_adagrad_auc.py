"""Row-wise vs full Adagrad: test AUC and embedding optimizer state on the synthetic default and the shared samples.

For every dataset, variant (single-layer d, MLET k×d) and seed, trains the same model twice, with
``--optimizer adagrad`` (torch Adagrad: n×k accumulators) and ``--optimizer rowwise_adagrad``
(:class:`mlet_compress.training.optim.RowWiseAdagrad`: n accumulators, FBGEMM's EXACT_ROWWISE_ADAGRAD),
same learning rate (the paper's Adagrad lr 0.02), early stopping on validation AUC as in the examples.
Prints mean ± std test AUC over the seeds, the mean difference (row-wise − full) and the embedding
optimizer state of each. Datasets absent from ``../shared/data`` are skipped (they are licensed and never
part of the repository).

Usage:
    nice -n 10 python benchmarks/rowwise_adagrad_auc.py [--model deepfm] [--seeds 0 1 2] [--epochs 10] \
        [--datasets synthetic criteo avazu movielens] [--json results.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

from mlet_compress.train import DataSpec, TrainConfig, train
from mlet_compress.training.run import load_data

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
DATASETS = {
    "synthetic": DataSpec(),
    "criteo": DataSpec(path=str(SHARED / "criteo_kaggle_sample" / "criteo_train_rows00001-08000.txt"), format="criteo"),
    "avazu": DataSpec(path=str(SHARED / "avazu_sample" / "avazu_train_first8999.csv"), format="avazu"),
    "movielens": DataSpec(path=str(SHARED / "movielens-100k"), format="movielens"),
}
OPTIMIZERS = ("adagrad", "rowwise_adagrad")


def _mean_std(xs: list[float]) -> tuple[float, float]:
    return statistics.fmean(xs), (statistics.stdev(xs) if len(xs) > 1 else 0.0)


def run_dataset(name: str, spec: DataSpec, args: argparse.Namespace) -> list[dict]:
    """Train every (variant, optimizer, seed) on one dataset; one summary row per variant."""
    splits = load_data(spec)
    rows = []
    for k in args.mlet_k:
        runs: dict[str, list[dict]] = {o: [] for o in OPTIMIZERS}
        for seed in args.seeds:
            for opt in OPTIMIZERS:
                cfg = TrainConfig(model=args.model, dim=args.dim, inner_dim=k, optimizer=opt, lr=args.lr,
                                  epochs=args.epochs, patience=args.patience, seed=seed, save_state=False, data=spec)
                t0 = time.perf_counter()
                m = train(cfg, splits).metrics
                runs[opt].append({"auc": m["test"]["auc"], "epoch": m["selected_epoch"], "mem": m["memory_bytes"],
                                  "seconds": time.perf_counter() - t0})
                print(f"  {name} {m['variant']} seed {seed} {opt}: AUC {m['test']['auc']:.4f} "
                      f"(epoch {m['selected_epoch']}, {time.perf_counter() - t0:.0f}s)", flush=True)
        full, row = ([r["auc"] for r in runs[o]] for o in OPTIMIZERS)
        diffs = [b - a for a, b in zip(full, row)]
        rows.append({
            "data": name, "variant": f"MLET k={k} d={args.dim}" if k else f"single d={args.dim}",
            "auc_full": _mean_std(full), "auc_rowwise": _mean_std(row), "diff": _mean_std(diffs),
            "epoch_full": statistics.fmean(r["epoch"] for r in runs["adagrad"]),
            "epoch_rowwise": statistics.fmean(r["epoch"] for r in runs["rowwise_adagrad"]),
            "state_full": runs["adagrad"][0]["mem"]["embedding_optimizer_state"],
            "state_rowwise": runs["rowwise_adagrad"][0]["mem"]["embedding_optimizer_state"],
            "params": runs["adagrad"][0]["mem"]["embedding_params_training"], "runs": runs,
        })
    return rows


def print_table(rows: list[dict], args: argparse.Namespace) -> None:
    """The markdown table of docs/torchrec.md."""
    print(f"\n{args.model}, lr {args.lr}, seeds {args.seeds}, up to {args.epochs} epochs (patience {args.patience})")
    print("| data | variant | full Adagrad AUC | row-wise AUC | Δ (row-wise − full) | epochs full / row-wise | "
          "emb. params MiB | opt. state MiB full / row-wise |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        (af, sf), (ar, sr), (d, sd) = r["auc_full"], r["auc_rowwise"], r["diff"]
        print(f"| {r['data']} | {r['variant']} | {af:.4f}±{sf:.4f} | {ar:.4f}±{sr:.4f} | {d:+.4f}±{sd:.4f} | "
              f"{r['epoch_full']:.1f} / {r['epoch_rowwise']:.1f} | {r['params'] / 2**20:.2f} | "
              f"{r['state_full'] / 2**20:.2f} / {r['state_rowwise'] / 2**20:.2f} |")


def main() -> int:
    """Parse flags, run the datasets one after the other, print the table."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="deepfm")
    ap.add_argument("--dim", type=int, default=16)
    ap.add_argument("--mlet-k", type=int, nargs="+", default=[0, 64], help="0 = single-layer")
    ap.add_argument("--lr", type=float, default=0.02)
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--patience", type=int, default=2)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--datasets", nargs="+", default=list(DATASETS), choices=list(DATASETS))
    ap.add_argument("--json", type=Path, default=None, help="also write every run here")
    args = ap.parse_args()
    rows = []
    for name in args.datasets:
        spec = DATASETS[name]
        if spec.path is not None and not Path(spec.path).exists():
            print(f"skipping {name}: {spec.path} not found (the shared samples live at ../shared/data)")
            continue
        rows += run_dataset(name, spec, args)
    print_table(rows, args)
    if args.json is not None:
        args.json.write_text(json.dumps({"args": vars(args) | {"json": str(args.json)}, "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
