"""Quality vs size on the Avazu sample: DLRM single-layer vs MLET, tuned arms, every stage, and hashing.

The first 8,999 rows of Avazu train.csv (one hour; random split), d ∈ {2, 4, 8, 16}, k ∈ {32, 64},
seeds 0–2, embedding-lr multipliers ×1/×4/×10 for both arms (best on validation), stages q8, q4, q8row,
svd:energy=0.95, svd:rank=2, svd:rank=4, plus every arm trained with its tables of >= 1,000 rows hashed
to half their rows (the paper hashed Avazu's largest tables); one temperature per cell fitted on
validation. Resumable: rerun the same command to continue. docs/results/avazu/ holds its report.md and figures.

Usage:
    python examples/sweep_avazu.py [--jobs 2] [--out sweeps/avazu]

The data is licensed and not in the repository: it is read from ../shared/data next to the repo.
"""

from __future__ import annotations

import sys

from _sweep_sample import SHARED, main

if __name__ == "__main__":
    sys.exit(main(__doc__, SHARED / "avazu_sample" / "avazu_train_first8999.csv", "avazu", hash_ratios="0.5"))
