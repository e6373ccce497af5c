"""The data options ``train`` and ``sweep`` share: one declaration of each flag and one ``DataSpec`` builder."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from mlet_compress.data import DataSpec

DATA = typer.Option(None, "--data", help="Data file/folder. Omit to use the synthetic default.")
FORMAT = typer.Option(None, "--format", help="criteo, avazu, movielens, libfm or csv (needed with --data).")
LABEL = typer.Option(None, "--label", help="csv: label column.")
CATEGORICAL = typer.Option(None, "--categorical", help="csv: comma-separated categorical columns.")
NUMERIC = typer.Option(None, "--numeric", help="csv: comma-separated numeric columns.")
VAL_DATA = typer.Option(None, "--val-data", help="Separate validation file (same format).")
TEST_DATA = typer.Option(None, "--test-data", help="Separate test file (same format).")
MIN_FREQ = typer.Option(1, "--min-freq", min=1, help="Rarer categories map to the field's OOV id.")
SPLIT_SEED = typer.Option(0, "--split-seed", help="Seed of the data split (the synthetic rows have their own fixed seed).")
SKIP_BAD_ROWS = typer.Option(False, "--skip-bad-rows", help="Skip and count malformed rows.")
ROWS = typer.Option(None, "--rows", min=1000, help="Synthetic default only: rows generated (default 200,000).")


def csv_list(value: Optional[str]) -> Optional[list[str]]:
    """``"a, b,,c"`` → ``["a", "b", "c"]``; None or empty → None."""
    return [v.strip() for v in value.split(",") if v.strip()] if value else None


def data_spec(data: Optional[Path], format: Optional[str], label: Optional[str], categorical: Optional[str],
              numeric: Optional[str], val_data: Optional[Path], test_data: Optional[Path], min_freq: int,
              split_seed: int, skip_bad_rows: bool, rows: Optional[int]) -> DataSpec:
    """The :class:`DataSpec` of the shared data flags (paths made absolute; ``--rows`` sizes the synthetic data)."""
    return DataSpec(
        path=str(data.resolve()) if data else None, format=format or "synthetic", label=label,
        categorical=csv_list(categorical), numeric=csv_list(numeric),
        val_data=str(val_data.resolve()) if val_data else None, test_data=str(test_data.resolve()) if test_data else None,
        min_freq=min_freq, seed=split_seed, skip_bad_rows=skip_bad_rows,
        synthetic={"num_rows": rows} if rows is not None else None,
    )
