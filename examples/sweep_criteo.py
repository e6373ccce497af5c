"""Quality vs size on the Criteo sample: DLRM single-layer vs MLET, tuned arms, every compression stage.

Rows 1–8,000 of Criteo Kaggle train.txt (time-ordered split), d ∈ {2, 4, 8, 16}, k ∈ {32, 64}, seeds
0–2, embedding-lr multipliers ×1/×4/×10 for both arms (best on validation), stages q8, q4, q8row,
svd:energy=0.95, svd:rank=2, svd:rank=4, one temperature per cell fitted on validation. Resumable:
rerun the same command to continue. docs/results/criteo/ holds its report.md and figures.

Usage:
    python examples/sweep_criteo.py [--jobs 2] [--out sweeps/criteo]

The data is licensed and not in the repository: it is read from ../shared/data next to the repo.
"""

from __future__ import annotations

import sys

from _sweep_sample import SHARED, main

if __name__ == "__main__":
    sys.exit(main(__doc__, SHARED / "criteo_kaggle_sample" / "criteo_train_rows00001-08000.txt", "criteo"))
