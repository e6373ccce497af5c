"""Avazu CTR reader (Kaggle "Click-Through Rate Prediction" ``train.csv``).

CSV with header, label ``click``. ``id`` is dropped without being parsed (it is a 64-bit unsigned
integer that overflows int64). ``hour`` (``YYMMDDHH``) is replaced by two categorical fields,
``hour_of_day`` (0..23) and ``weekday`` (0 = Monday .. 6 = Sunday, from the date 20YY-MM-DD); every
other column is a categorical field read as text, in file order. There are no dense features.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np

from ..errors import DataError
from .textio import ColSpec, in_set, raw_column, read_delimited, sniff_first_line, to_numpy
from .types import RawColumn, RawTable


def _valid_hour(arr) -> np.ndarray:
    h = to_numpy(arr.cast("float64"))
    ok = np.isfinite(h) & (h >= 0) & (h < 1e8)
    hi = np.where(ok, h, 0).astype(np.int64)
    mm, dd, hh = (hi // 10_000) % 100, (hi // 100) % 100, hi % 100
    return ok & (mm >= 1) & (mm <= 12) & (dd >= 1) & (dd <= 31) & (hh <= 23)


def hour_features(hour: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(hour_of_day, weekday) from ``YYMMDDHH`` integers; weekday 0 = Monday.

    Example:
        >>> hour_features(np.array([14102100]))   # 2014-10-21 was a Tuesday
        (array([0]), array([1]))
    """
    hour = np.asarray(hour, np.int64)
    yy, mm, dd, hh = hour // 1_000_000, (hour // 10_000) % 100, (hour // 100) % 100, hour % 100
    years = (2000 + yy - 1970).astype("datetime64[Y]")
    days = (years.astype("datetime64[M]") + (mm - 1)).astype("datetime64[D]") + (dd - 1)
    weekday = (days.astype(np.int64) + 3) % 7  # 1970-01-01 was a Thursday (3)
    return hh, weekday


def read_avazu(path: Path, *, skip_bad_rows: bool = False,
               progress: Callable[[str], None] | None = None) -> RawTable:
    """Read an Avazu CSV into a :class:`RawTable`.

    Args:
        path: ``train.csv``-style file with header (``id,click,hour,C1,...``).
        skip_bad_rows: drop (and count) malformed rows instead of raising.
        progress: optional status callback.

    Returns:
        RawTable with fields ``hour_of_day, weekday, C1, banner_pos, ...`` and no dense columns.

    Raises:
        DataError: no header with ``click``/``hour``, wrong column count, label not 0/1, bad hour.

    Example:
        >>> # raw = read_avazu(Path("train.csv"))
    """
    first = sniff_first_line(path)
    names = [c.strip() for c in first.split(",")]
    if "click" not in names or "hour" not in names:
        raise DataError(
            f"{path}: line 1 must be the Avazu header with 'click' and 'hour' (got {names[:4]}...); "
            f"the Kaggle test.csv has no labels and cannot be used"
        )
    if len(set(names)) != len(names):
        raise DataError(f"{path}: line 1 header has duplicate column names; rename them")
    cats = [n for n in names if n not in ("id", "click", "hour")]
    specs = {"click": ColSpec("int", in_set([0, 1]), "click must be 0 or 1"),
             "hour": ColSpec("int", _valid_hour, "hour must be YYMMDDHH")}
    specs.update({c: ColSpec("cat") for c in cats})
    if progress is not None:
        progress(f"parsing Avazu file {path.name}")
    table, skipped = read_delimited(path, delimiter=",", names=names, header_lines=1, specs=specs,
                                    skip_bad_rows=skip_bad_rows, progress=progress)
    labels = to_numpy(table.column("click")).astype(np.float32)
    hh, wd = hour_features(to_numpy(table.column("hour")).astype(np.int64))
    columns = [RawColumn(hh.astype(np.int32), np.arange(24, dtype=np.int64)),
               RawColumn(wd.astype(np.int32), np.arange(7, dtype=np.int64))]
    columns += [raw_column(table.column(c)) for c in cats]
    return RawTable(labels, np.zeros((len(labels), 0)), [], ["hour_of_day", "weekday"] + cats, columns, skipped)
