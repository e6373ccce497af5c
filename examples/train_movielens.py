"""Single-layer vs MLET on MovieLens-100k (click = rating >= 4; user and item features as fields; DLRM, SGD lr 0.2,
k = 64, as in docs/results.md; --model deepfm/... for DeepCTR models, Adagrad lr 0.02).

The 100,000 ratings (RecBole atomic files) are split at random (90% train with a validation slice, 10%
test, seeded); a click is a rating of 4 or 5. Small data needs several epochs: early stopping on validation
AUC picks the epoch whose test metrics are reported. Each seed also trains single-layer baselines with
raised embedding learning rates (×4, ×10), the honest baseline.

Usage:
    python examples/train_movielens.py [--model dlrm] [--dim 16] [--mlet-k 64] [--epochs 15] [--patience 3] [--seeds 0 1 2] [--out runs/movielens]

The data is licensed and not in the repository: it is read from ../shared/data next to the repo.
"""

from __future__ import annotations

import sys

from _compare_sample import SHARED, main

DATA = SHARED / "movielens-100k"
FORMAT = "movielens"
DEFAULT_MODEL = "dlrm"  # docs/results.md

if __name__ == "__main__":
    sys.exit(main(__doc__, DATA, FORMAT, DEFAULT_MODEL))
