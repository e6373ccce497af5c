"""Split rules.

* ``"time"`` (Criteo, as in the paper §4): rows in file order; the first ``floor(6n/7)`` rows train,
  the remaining rows (the "last day") split evenly in file order: first half validation
  (``rest // 2`` rows), second half test.
* ``"random"`` (every other format, including synthetic): a seeded permutation
  (``numpy.random.default_rng(seed)``); ``round(0.1 n)`` rows test, ``round(rest / 9)`` of the rest
  validation (so about 80/10/10), the remainder train.

With separate files (``val_data`` / ``test_data``) only the missing part is drawn from ``path``:
a test file alone -> validation slice of ``path`` (time: its last ``n // 14`` rows, the size of the
default validation split; random: ``round(n / 9)`` rows); a validation file alone -> test slice of
``path`` (time: last ``n // 14`` rows; random: ``round(0.1 n)`` rows); both -> all of ``path`` trains.
Every index array is sorted (file order within a split).
"""

from __future__ import annotations

import numpy as np

from ..errors import ConfigError

SPLIT_RULES = ("time", "random")


def split_indices(n: int, rule: str, seed: int = 0, *, has_val_file: bool = False,
                  has_test_file: bool = False) -> dict[str, np.ndarray]:
    """Indices of the rows of ``path`` for ``train``/``val``/``test`` (absent keys come from files).

    Args:
        n: number of rows of ``path``.
        rule: ``"time"`` or ``"random"``.
        seed: seed of the random rule.
        has_val_file, has_test_file: whether those splits come from separate files.

    Returns:
        dict with int64 index arrays for ``train`` and for each split not given as a file.

    Raises:
        ConfigError: unknown rule or negative n.

    Example:
        >>> {k: len(v) for k, v in split_indices(70, "time").items()}
        {'train': 60, 'val': 5, 'test': 5}
    """
    if rule not in SPLIT_RULES:
        raise ConfigError(f"split rule {rule!r} is unknown; use one of {SPLIT_RULES}")
    if n < 0:
        raise ConfigError(f"row count {n} must be >= 0")
    all_idx = np.arange(n, dtype=np.int64)
    if has_val_file and has_test_file:
        return {"train": all_idx}
    if rule == "time":
        if has_val_file or has_test_file:
            k = n // 14
            name = "test" if has_val_file else "val"
            return {"train": all_idx[: n - k], name: all_idx[n - k:]}
        n_train = (6 * n) // 7
        n_val = (n - n_train) // 2
        return {"train": all_idx[:n_train], "val": all_idx[n_train:n_train + n_val],
                "test": all_idx[n_train + n_val:]}
    perm = np.random.default_rng(seed).permutation(n).astype(np.int64)
    if has_test_file:
        k = int(round(n / 9))
        return {"train": np.sort(perm[k:]), "val": np.sort(perm[:k])}
    n_test = int(round(0.1 * n))
    if has_val_file:
        return {"train": np.sort(perm[n_test:]), "test": np.sort(perm[:n_test])}
    n_val = int(round((n - n_test) / 9))
    return {"train": np.sort(perm[n_test + n_val:]), "val": np.sort(perm[n_test:n_test + n_val]),
            "test": np.sort(perm[:n_test])}


def describe_rule(rule: str) -> str:
    """One-line human description of a split rule (stored in ``info``)."""
    return {"time": "file order: first 6/7 train, last 1/7 halved into val then test",
            "random": "seeded permutation: 10% test, 1/9 of the rest val, remainder train"}[rule]
