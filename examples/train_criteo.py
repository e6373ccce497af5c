"""Single-layer vs MLET on the shared Criteo Kaggle sample (paper §4: DLRM, SGD lr 0.2, k = 64).

The sample (8,000 chronological rows) is split by time as in the paper: the first 6/7 train, the last
1/7 is halved into validation and test. Small data needs several epochs: early stopping on validation
AUC picks the epoch whose test metrics are reported. Each seed also trains single-layer baselines with
raised embedding learning rates (×4, ×10), the honest baseline.

Usage:
    python examples/train_criteo.py [--model dlrm] [--dim 16] [--mlet-k 64] [--epochs 15] [--patience 3] [--seeds 0 1 2] [--out runs/criteo]

The data is licensed and not in the repository: it is read from ../shared/data next to the repo.
"""

from __future__ import annotations

import sys

from _compare_sample import SHARED, main

DATA = SHARED / "criteo_kaggle_sample" / "criteo_train_rows00001-08000.txt"
FORMAT = "criteo"
DEFAULT_MODEL = "dlrm"  # docs/results.md

if __name__ == "__main__":
    sys.exit(main(__doc__, DATA, FORMAT, DEFAULT_MODEL))
