"""Criteo Kaggle Display Advertising Challenge reader.

Two layouts are accepted, detected from the first line:

* the raw ``train.txt``: 40 tab-separated columns ``label, I1..I13, C1..C26``, no header;
* a CSV/TSV **with header** (e.g. ``Id,Label,I1,..,C26`` with CRLF line endings, as written by the
  1st-place solution's ``txt2csv``): a header is detected when the first field of line 1 is not an
  integer; columns are then found by name (case-insensitive) and any other column (``Id``) is ignored.

An empty field is missing. The 13 integer features are kept raw here (NaN = missing); the
preprocessor applies ``log(1 + max(x, 0))`` with missing -> 0 (see :mod:`.vocab`). The 26 hashed
categoricals become dictionary-encoded fields (missing -> the OOV id 0 after the vocabulary).
The label must be 0 or 1.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from ..errors import DataError
from .textio import ColSpec, dense_matrix, in_set, is_int_text, raw_column, read_delimited, sniff_first_line, \
    to_numpy
from .types import RawTable

INT_NAMES = [f"I{i}" for i in range(1, 14)]
CAT_NAMES = [f"C{i}" for i in range(1, 27)]


def _layout(path: Path) -> tuple[str, list[str], int, dict[str, str]]:
    """(delimiter, all column names, header lines, canonical name -> file column name)."""
    first = sniff_first_line(path)
    if not first:
        raise DataError(f"{path}: line 1 is empty; a Criteo file starts with a data row or a header")
    delim = "\t" if "\t" in first else ","
    cells = [c.strip() for c in first.split(delim)]
    if is_int_text(cells[0]):
        names = ["label"] + INT_NAMES + CAT_NAMES
        return delim, names, 0, {n: n for n in names}
    lower = {c.lower(): c for c in cells}
    wanted = ["label"] + INT_NAMES + CAT_NAMES
    missing = [w for w in wanted if w.lower() not in lower]
    if missing:
        raise DataError(
            f"{path}: line 1 looks like a header but lacks Criteo columns {missing[:5]}; expected "
            f"Label, I1..I13, C1..C26 (an Id column is ignored)"
        )
    if len(set(c.lower() for c in cells)) != len(cells):
        raise DataError(f"{path}: line 1 header has duplicate column names; rename them")
    return delim, cells, 1, {w: lower[w.lower()] for w in wanted}


def read_criteo(path: Path, *, skip_bad_rows: bool = False,
                progress: Callable[[str], None] | None = None) -> RawTable:
    """Read a Criteo Kaggle file into a :class:`RawTable`.

    Args:
        path: ``train.txt``-style TSV or a CSV with header.
        skip_bad_rows: drop (and count) malformed rows instead of raising.
        progress: optional status callback.

    Returns:
        RawTable with labels, raw I1..I13 (float64, NaN missing) and fields C1..C26.

    Raises:
        DataError: wrong column count, non-integer I-field or label not in {0,1} (file + line).

    Example:
        >>> # raw = read_criteo(Path("train.txt"))
    """
    delim, names, header, col = _layout(path)
    specs = {col["label"]: ColSpec("int", in_set([0, 1]), "the label must be 0 or 1")}
    specs.update({col[n]: ColSpec("int") for n in INT_NAMES})
    specs.update({col[n]: ColSpec("cat") for n in CAT_NAMES})
    if progress is not None:
        progress(f"parsing Criteo file {path.name}")
    table, skipped = read_delimited(path, delimiter=delim, names=names, header_lines=header, specs=specs,
                                    skip_bad_rows=skip_bad_rows, progress=progress)
    labels = to_numpy(table.column(col["label"])).astype("float32")
    dense = dense_matrix([table.column(col[n]) for n in INT_NAMES], len(labels))
    columns = [raw_column(table.column(col[n])) for n in CAT_NAMES]
    return RawTable(labels, dense, list(INT_NAMES), list(CAT_NAMES), columns, skipped)
