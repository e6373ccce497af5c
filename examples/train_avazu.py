"""Single-layer vs MLET on the shared Avazu sample (DLRM, SGD lr 0.2, k = 64, as in docs/results.md; the paper's
Avazu models are DeepCTR's: pass --model dcn/deepfm/... for them, Adagrad lr 0.02).

The sample (8,999 rows from one hour) is split at random as in the paper (90% train with a validation
slice, 10% test, seeded); `hour` becomes hour-of-day and weekday fields. Small data needs several epochs: early stopping on validation
AUC picks the epoch whose test metrics are reported. Each seed also trains single-layer baselines with
raised embedding learning rates (×4, ×10), the honest baseline.

Usage:
    python examples/train_avazu.py [--model dlrm] [--dim 16] [--mlet-k 64] [--epochs 15] [--patience 3] [--seeds 0 1 2] [--out runs/avazu]

The data is licensed and not in the repository: it is read from ../shared/data next to the repo.
"""

from __future__ import annotations

import sys

from _compare_sample import SHARED, main

DATA = SHARED / "avazu_sample" / "avazu_train_first8999.csv"
FORMAT = "avazu"
DEFAULT_MODEL = "dlrm"  # docs/results.md

if __name__ == "__main__":
    sys.exit(main(__doc__, DATA, FORMAT, DEFAULT_MODEL))
