"""Shared runner of the per-dataset examples: single-layer vs MLET (mean ± std over seeds) on a shared sample."""

from __future__ import annotations

import argparse
from pathlib import Path

from mlet_compress.train import DataSpec, TrainConfig, compare_seeds

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def print_table(res: dict) -> None:
    """A plain-text table of the mean (± std) metrics per variant."""
    cols = [("test AUC", "auc"), ("LogLoss", "logloss"), ("PR-AUC", "pr_auc"), ("Set A PR-AUC", "set_a_pr_auc"),
            ("Set B PR-AUC", "set_b_pr_auc"), ("epoch", "selected_epoch"), ("emb params (infer)", "emb_params_inference")]
    print(f"{'variant':26s}" + "".join(f"{name:>20s}" for name, _ in cols))
    for row in res["rows"]:
        cells = []
        for _, key in cols:
            v, s = row[key], row.get(key + "_std", 0.0)
            cells.append(f"{v:,.0f}" if key.startswith("emb") else f"{v:.1f}" if key == "selected_epoch" else f"{v:.4f}±{s:.4f}")
        print(f"{row['variant']:26s}" + "".join(f"{c:>20s}" for c in cells))
    s = res["summary"]
    print(f"MLET - paper baseline: AUC {s['vs_paper']['auc']:+.4f}, Set B PR-AUC {s['vs_paper']['set_b_pr_auc']:+.4f}")
    print(f"MLET - best baseline on validation ({s['best_variant']}): AUC {s['vs_best']['auc']:+.4f}")


def main(doc: str, data: Path, fmt: str, default_model: str) -> int:
    """Parse the example's flags, run :func:`compare_seeds` and print the table."""
    ap = argparse.ArgumentParser(description=doc.splitlines()[0])
    ap.add_argument("--data", type=Path, default=data)
    ap.add_argument("--model", default=default_model)
    ap.add_argument("--dim", type=int, default=16)
    ap.add_argument("--mlet-k", type=int, default=64)
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--patience", type=int, default=2)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--emb-lr-mults", type=float, nargs="*", default=[1, 4, 10])
    ap.add_argument("--out", type=Path, default=None, help="write every run here (default: keep nothing)")
    args = ap.parse_args()
    if not args.data.exists():
        print(f"data not found: {args.data}\nPut the shared data next to the repository (../shared/data) or pass --data.")
        return 0
    cfg = TrainConfig(model=args.model, dim=args.dim, inner_dim=args.mlet_k, epochs=args.epochs, patience=args.patience,
                      save_state=False, data=DataSpec(path=str(args.data), format=fmt))
    res = compare_seeds(cfg, args.seeds, emb_lr_mults=args.emb_lr_mults, out=args.out)
    print(f"{args.model} on {args.data.name}, d={args.dim}, k={args.mlet_k}, seeds {args.seeds}")
    print_table(res)
    return 0
