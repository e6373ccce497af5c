"""Generic CSV / TSV / Parquet reader.

CSV files must have a header line. The delimiter is a tab for ``.tsv``/``.tab`` files or when line 1
has tabs and no commas, else a comma; ``"`` quoting is honoured. A ``.parquet``/``.pq`` suffix reads
the file with ``pyarrow.parquet`` instead.

Columns: ``label`` (default: the first of ``label``, ``click``, ``target``, ``y`` present, matched
case-insensitively) holds -1/0/1 (or booleans); ``label > 0`` is click 1. ``categorical`` columns
are read as text (so ``1`` and ``1.0`` are different categories); ``numeric`` columns as float64
(empty = missing; the preprocessor's dense transform handles missing values). When neither list is
given every other column is categorical; when one is given the other defaults to empty.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np

from ..errors import ConfigError, DataError
from .textio import ColSpec, dense_matrix, in_set, raw_column, read_delimited, sniff_first_line, to_numpy
from .types import RawTable

# pyarrow is imported inside the functions that use it (lean import): `import mlet_compress.data` and the
# synthetic path never load it.

PARQUET_SUFFIXES = (".parquet", ".pq")
_LABEL_NAMES = ("label", "click", "target", "y")


def _resolve_columns(path: Path, names: list[str], label: str | None, categorical: list[str] | None,
                     numeric: list[str] | None) -> tuple[str, list[str], list[str]]:
    if label is None:
        lower = {n.lower(): n for n in names}
        found = [lower[c] for c in _LABEL_NAMES if c in lower]
        if not found:
            raise ConfigError(f"{path}: no label column among {names[:8]}...; pass label='<column name>'")
        label = found[0]
    if label not in names:
        raise ConfigError(f"{path}: label column {label!r} not found; columns are {names}")
    if categorical is None and numeric is None:
        categorical, numeric = [n for n in names if n != label], []
    categorical, numeric = list(categorical or []), list(numeric or [])
    missing = [c for c in categorical + numeric if c not in names]
    if missing:
        raise ConfigError(f"{path}: columns {missing} not found; columns are {names}")
    both = set(categorical) & set(numeric)
    if both or label in categorical + numeric:
        raise ConfigError(f"{path}: columns {sorted(both | ({label} & set(categorical + numeric)))} are used "
                          f"twice; list each column once among label/categorical/numeric")
    if not categorical:
        raise ConfigError(f"{path}: no categorical column selected; pass categorical=[...]")
    return label, categorical, numeric


def _label_values(y: np.ndarray) -> np.ndarray:
    return (y > 0).astype(np.float32)


def read_csv_table(path: Path, *, label: str | None = None, categorical: list[str] | None = None,
                   numeric: list[str] | None = None, skip_bad_rows: bool = False,
                   progress: Callable[[str], None] | None = None) -> RawTable:
    """Read a generic CSV/TSV/Parquet file into a :class:`RawTable`.

    Args:
        path: the file (``.parquet``/``.pq`` -> Parquet).
        label, categorical, numeric: column names (see the module docstring for defaults).
        skip_bad_rows: drop (and count) malformed rows instead of raising.
        progress: optional status callback.

    Returns:
        RawTable with the categorical fields and raw numeric columns (NaN = missing).

    Raises:
        ConfigError: unknown or duplicated column names.
        DataError: wrong column count, non-numeric value, label not -1/0/1 (file + line or row).

    Example:
        >>> # raw = read_csv_table(Path("x.csv"), label="y", categorical=["a", "b"], numeric=["n"])
    """
    path = Path(path)
    if progress is not None:
        progress(f"parsing {path.name}")
    if path.suffix.lower() in PARQUET_SUFFIXES:
        return _read_parquet(path, label, categorical, numeric, skip_bad_rows)
    first = sniff_first_line(path)
    delim = "\t" if path.suffix.lower() in (".tsv", ".tab") or ("\t" in first and "," not in first) else ","
    names = [c.strip().strip('"') for c in first.split(delim)]
    if len(set(names)) != len(names):
        raise DataError(f"{path}: line 1 header has duplicate column names; rename them")
    label, categorical, numeric = _resolve_columns(path, names, label, categorical, numeric)
    specs = {label: ColSpec("float", in_set([-1.0, 0.0, 1.0]), "the label must be -1, 0 or 1")}
    specs.update({c: ColSpec("float") for c in numeric})
    specs.update({c: ColSpec("cat") for c in categorical})
    table, skipped = read_delimited(path, delimiter=delim, names=names, header_lines=1, specs=specs,
                                    skip_bad_rows=skip_bad_rows, quoted=True, progress=progress)
    y = _label_values(to_numpy(table.column(label)))
    dense = dense_matrix([table.column(c) for c in numeric], len(y))
    return RawTable(y, dense, numeric, categorical, [raw_column(table.column(c)) for c in categorical], skipped)


def _read_parquet(path: Path, label, categorical, numeric, skip_bad_rows) -> RawTable:
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    if not path.is_file():
        raise DataError(f"data file {path} does not exist or is not a file; check the path")
    try:
        names = pq.read_schema(path).names
    except (pa.ArrowInvalid, OSError) as exc:
        raise DataError(f"{path}: not a readable Parquet file ({exc}); check the file") from exc
    label, categorical, numeric = _resolve_columns(path, names, label, categorical, numeric)
    table = pq.read_table(path, columns=[label] + categorical + numeric)
    try:
        y = to_numpy(table.column(label).cast(pa.float64()))
        dense = dense_matrix([table.column(c).cast(pa.float64()) for c in numeric], table.num_rows)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
        raise DataError(f"{path}: a label/numeric column is not numeric ({exc}); fix the column types") from exc
    ok = np.isin(y, [-1.0, 0.0, 1.0])
    skipped = 0
    if not ok.all():
        i = int(np.flatnonzero(~ok)[0])
        if not skip_bad_rows:
            raise DataError(f"{path}: row {i + 1}: label {float(y[i])!r} is not -1, 0 or 1; fix it or skip bad rows "
                            "({option})", option="skip_bad_rows")
        skipped = int((~ok).sum())
        table, y, dense = table.filter(pa.array(ok)), y[ok], dense[ok]
    cols = [raw_column(pc.cast(table.column(c), pa.string()) if not pa.types.is_dictionary(table.column(c).type)
                       else table.column(c)) for c in categorical]
    return RawTable(_label_values(y), dense, numeric, categorical, cols, skipped)
