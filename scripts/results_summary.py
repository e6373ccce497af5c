"""Print the summary tables of docs/results.md from the sweeps' results.json files.

    python scripts/results_summary.py sweeps/criteo sweeps/avazu sweeps/movielens

Per dataset and d (unhashed cells, DLRM): mean test AUC over seeds of the paper baseline, the tuned
baseline (embedding-lr multiplier best on validation), MLET k=64 at the paper's lr and MLET k=64 tuned
(the same tuning budget); the paired per-seed difference of the two tuned arms (mean ± sample std,
ddof = 1); and what int8 / int4 per-table quantization and truncated SVD to rank 2 do to the tuned MLET
model's AUC (mean per-seed change) and embedding bytes.
"""

from __future__ import annotations

import json
import statistics
import sys
from collections import defaultdict
from pathlib import Path

from mlet_compress.sweep.stats import Arm


def _pick(rows, arm: Arm):
    """(dim) -> {(seed, stage): row} of the unhashed rows the report's arm takes (the sweep's own rule)."""
    out = defaultdict(dict)
    for r in rows:
        if r.get("hash_ratio") or r.get("error") or not arm.takes(r):
            continue
        out[r["dim"]][(r["seed"], r["stage"])] = r
    return out


def _mean(xs):
    return statistics.fmean(xs) if xs else float("nan")


def _auc(cells, stage="none"):
    return [r["auc"] for (s, st), r in sorted(cells.items()) if st == stage]


def _fmt_pm(xs):
    if len(xs) < 2:
        return f"{_mean(xs):+.4f}"
    return f"{_mean(xs):+.4f} ± {statistics.stdev(xs):.4f}"


def summarize(name: str, rows: list[dict]) -> list[str]:
    base, tuned = _pick(rows, Arm("", "single", 0, False)), _pick(rows, Arm("", "single", 0, True))
    mlet, mlet_t = _pick(rows, Arm("", "mlet", 64, False)), _pick(rows, Arm("", "mlet", 64, True))
    lines = []
    for d in sorted(base):
        seeds = sorted({s for (s, st) in tuned[d] if st == "none"} & {s for (s, st) in mlet_t[d] if st == "none"})
        paired = [mlet_t[d][(s, "none")]["auc"] - tuned[d][(s, "none")]["auc"] for s in seeds]
        stage = {}
        for st in ("q8", "q4", "svd:rank=2"):
            deltas = [mlet_t[d][(s, st)]["auc"] - mlet_t[d][(s, "none")]["auc"] for s in seeds if (s, st) in mlet_t[d]]
            nbytes = [mlet_t[d][(s, st)]["emb_bytes"] for s in seeds if (s, st) in mlet_t[d]]
            stage[st] = f"{_mean(deltas):+.4f} ({int(_mean(nbytes)):,} B)" if deltas else "-"
        none_bytes = mlet_t[d][(seeds[0], "none")]["emb_bytes"] if seeds else 0
        lines.append(f"| {name} | {d} | {none_bytes:,} | {_mean(_auc(base[d])):.4f} | {_mean(_auc(tuned[d])):.4f} | "
                     f"{_mean(_auc(mlet[d])):.4f} | {_mean(_auc(mlet_t[d])):.4f} | {_fmt_pm(paired)} | "
                     f"{stage['q8']} | {stage['q4']} | {stage['svd:rank=2']} |")
    return lines


def main(dirs: list[str]) -> int:
    print("| data | d | emb bytes | paper baseline | tuned baseline | MLET k=64 | MLET k=64 tuned | "
          "Δ tuned MLET − tuned baseline (paired) | ΔAUC after q8 (bytes) | after q4 | after svd rank 2 |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for d in dirs:
        path = Path(d) / "results.json"
        if not path.exists():
            print(f"{path}: not found (run the sweep example first)", file=sys.stderr)
            return 1
        for line in summarize(Path(d).name, json.loads(path.read_text())):
            print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:] or ["sweeps/criteo", "sweeps/avazu", "sweeps/movielens"]))
