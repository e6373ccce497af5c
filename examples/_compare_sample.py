"""Shared runner of the per-dataset examples: single-layer vs MLET (mean ± std over seeds) on a shared sample."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from mlet_compress.train import DataSpec, TrainCallback, TrainConfig, compare_seeds, compare_variants

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"


class PrintProgress(TrainCallback):
    """One line per run (start and end, with its test AUC) and per epoch, flushed (visible in logs and pipes)."""

    def __init__(self, total_runs: int) -> None:
        self.total, self.done, self.t0, self.start = total_runs, 0, 0.0, time.perf_counter()

    def on_run_start(self, name: str, total_steps: int) -> None:  # noqa: D102
        self.t0 = time.perf_counter()
        print(f"run {self.done + 1}/{self.total}: {name} (up to {total_steps:,} steps)", flush=True)

    def on_epoch_end(self, epoch: int, record: dict) -> None:  # noqa: D102
        val = record.get("val") or {}
        auc = f", val AUC {val['auc']:.4f}" if "auc" in val else ""
        print(f"  epoch {epoch}: train loss {record['train_loss']:.4f}{auc} ({record['seconds']:.1f}s)", flush=True)

    def on_run_end(self, name: str, metrics: dict) -> None:  # noqa: D102
        self.done += 1
        print(f"  done in {time.perf_counter() - self.t0:.0f}s: test AUC {metrics['test'].get('auc', float('nan')):.4f}, "
              f"selected epoch {metrics['selected_epoch']} ({time.perf_counter() - self.start:.0f}s so far)", flush=True)


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


def build_parser(doc: str, data: Path, default_model: str) -> argparse.ArgumentParser:
    """The examples' flags; the defaults are the commands of docs/results.md."""
    ap = argparse.ArgumentParser(description=" ".join(doc.split("\n\n")[0].split()))
    ap.add_argument("--data", type=Path, default=data)
    ap.add_argument("--model", default=default_model)
    ap.add_argument("--dim", type=int, default=16)
    ap.add_argument("--mlet-k", type=int, default=64)
    ap.add_argument("--epochs", type=int, default=15, help="maximum epochs (early stopping on validation AUC)")
    ap.add_argument("--patience", type=int, default=3)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--emb-lr-mults", type=float, nargs="*", default=[1, 4, 10])
    ap.add_argument("--out", type=Path, default=None, help="write every run here (default: keep nothing)")
    ap.add_argument("--threads", type=int, default=None,
                    help="torch CPU threads (default: torch's choice; 1 is faster on a machine other jobs keep busy)")
    return ap


def main(doc: str, data: Path, fmt: str, default_model: str) -> int:
    """Parse the example's flags, run :func:`compare_seeds` (one progress line per run and epoch), print the table."""
    args = build_parser(doc, data, default_model).parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    if not args.data.exists():
        print(f"data not found: {args.data}\nPut the shared data next to the repository (../shared/data) or pass --data.")
        return 0
    cfg = TrainConfig(model=args.model, dim=args.dim, inner_dim=args.mlet_k, epochs=args.epochs, patience=args.patience,
                      save_state=False, data=DataSpec(path=str(args.data), format=fmt))
    runs = len(compare_variants(cfg, args.emb_lr_mults)) * len(args.seeds)
    print(f"{args.model} on {args.data.name}, d={args.dim}, k={args.mlet_k}, seeds {args.seeds}: {runs} runs of up to "
          f"{args.epochs} epochs (early stopping, patience {args.patience})", flush=True)
    t0 = time.perf_counter()
    res = compare_seeds(cfg, args.seeds, emb_lr_mults=args.emb_lr_mults, out=args.out, callback=PrintProgress(runs))
    print(f"\n{args.model} on {args.data.name}, d={args.dim}, k={args.mlet_k}, seeds {args.seeds} "
          f"({time.perf_counter() - t0:.0f}s)")
    print_table(res)
    return 0
