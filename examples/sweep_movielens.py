"""Quality vs size on MovieLens-100k: DLRM single-layer vs MLET, tuned arms, every compression stage.

The 100,000 ratings (click = rating >= 4; random split), d ∈ {2, 4, 8, 16}, k ∈ {32, 64}, seeds 0–2,
embedding-lr multipliers ×1/×4/×10 for both arms (best on validation), stages q8, q4, q8row,
svd:energy=0.95, svd:rank=2, svd:rank=4, one temperature per cell fitted on validation. Resumable:
rerun the same command to continue. docs/results/movielens/ holds its report.md and figures.

Usage:
    python examples/sweep_movielens.py [--jobs 2] [--out sweeps/movielens]

The data is licensed and not in the repository: it is read from ../shared/data next to the repo.
"""

from __future__ import annotations

import sys

from _sweep_sample import SHARED, main

if __name__ == "__main__":
    sys.exit(main(__doc__, SHARED / "movielens-100k", "movielens"))
