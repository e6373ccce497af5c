"""libFM / libSVM-style reader with one categorical field per position.

Each line is ``label tok_1 tok_2 ... tok_F`` separated by whitespace, where ``tok_f`` is ``idx:val``
or ``idx``. This is the layout of the CTR datasets distributed in libFM form (e.g. the Criteo/Avazu/
Frappe/MovieLens-tag files of the NFM/AFM/AFN papers): position ``f`` always belongs to field ``f`` and
``idx`` is a (global) one-hot feature index, with ``val`` = 1. So the category of field ``f`` is the
text of ``idx`` at position ``f``; ``val`` must be a number but is otherwise ignored (one-hot
assumption). Fields are named ``f0 .. f{F-1}``; ``F`` is taken from the first data line and every
line must have the same number of tokens. Labels must be -1, 0 or 1 (``+1`` and ``1.0`` are fine);
``label > 0`` becomes click 1. Blank lines are ignored. There are no dense features.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np

from ..errors import DataError
from .textio import iter_line_blocks, lines_array, raw_column, to_numpy
from .types import RawTable

# pyarrow is imported inside the functions that use it (lean import): `import mlet_compress.data` and the
# synthetic path never load it.

_TOKEN_RE = r"^[^:]+(:[+-]?([0-9]+(\.[0-9]*)?|\.[0-9]+)([eE][+-]?[0-9]+)?)?$"
_LABEL_RE = r"^[+-]?[01](\.0*)?$"


def read_libfm(path: Path, *, skip_bad_rows: bool = False, num_fields: int | None = None,
               progress: Callable[[str], None] | None = None) -> RawTable:
    """Read a libFM file into a :class:`RawTable`.

    Args:
        path: the file.
        skip_bad_rows: drop (and count) malformed lines instead of raising.
        num_fields: expected number of fields (e.g. that of the training file); None = from line 1.
        progress: optional status callback.

    Returns:
        RawTable with fields ``f0..f{F-1}`` and no dense columns.

    Raises:
        DataError: wrong token count, bad label, token not ``idx[:number]`` (file + line).

    Example:
        >>> # raw = read_libfm(Path("train.libfm"))
    """
    import pyarrow as pa

    path = Path(path)
    if not path.is_file():
        raise DataError(f"data file {path} does not exist or is not a file; check the path")
    if progress is not None:
        progress(f"parsing libFM file {path.name}")
    labels, keys, skipped = [], [], 0
    for line0, buf in iter_line_blocks(path, "utf8"):
        block = _parse_block(path, line0, buf, num_fields, skip_bad_rows)
        if block is None:  # only blank lines
            continue
        num_fields, lab, toks, nbad = block
        skipped += nbad
        labels.append(lab)
        keys.append(toks)
    if num_fields is None:
        raise DataError(f"{path}: the file has no data lines; a libFM line is 'label idx:val ...'")
    if not keys:
        return RawTable(np.zeros(0, np.float32), np.zeros((0, 0)), [], [f"f{f}" for f in range(num_fields)],
                        [raw_column(pa.array([], pa.string())) for _ in range(num_fields)], skipped)
    columns = [raw_column(pa.chunked_array([k[f].cast(pa.string()) for k in keys]))
               for f in range(num_fields)]
    y = np.concatenate(labels)
    return RawTable(y, np.zeros((len(y), 0)), [], [f"f{f}" for f in range(num_fields)], columns, skipped)


def _parse_block(path: Path, line0: int, buf, num_fields: int | None, skip_bad_rows: bool):
    """One block of lines starting at 0-based line ``line0``: ``(num_fields, labels, field tokens, bad lines)``.

    ``num_fields`` None takes it from the block's first line. Returns None for a block of blank lines.

    Raises:
        DataError: a malformed line (file + line) unless ``skip_bad_rows``.
    """
    import pyarrow as pa
    import pyarrow.compute as pc

    lines = pc.utf8_trim_whitespace(lines_array(buf))
    lineno = line0 + 1 + np.arange(len(lines))
    keep = to_numpy(pc.utf8_length(lines)) > 0
    lines, lineno = lines.filter(pa.array(keep)), lineno[keep]
    if len(lines) == 0:
        return None
    parts = pc.split_pattern_regex(lines, r"\s+")
    counts = to_numpy(pc.list_value_length(parts))
    if num_fields is None:
        num_fields = int(counts[0]) - 1
        if num_fields < 1:
            raise DataError(f"{path}: line {lineno[0]}: a libFM line needs a label and at least one idx:val")
    width = num_fields + 1
    bad = counts != width
    why = {}  # line number -> the first problem found on it
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        why[int(lineno[i])] = f"expected {width} tokens (label + {num_fields} fields), got {int(counts[i])}"
    good_lineno = lineno[np.flatnonzero(~bad)]
    lab, toks, rowbad = _check_tokens(pc.list_flatten(parts.filter(pa.array(~bad))), num_fields, good_lineno, why)
    nbad = int(bad.sum() + rowbad.sum())
    if nbad and not skip_bad_rows:
        first = min(why)
        raise DataError(f"{path}: line {first}: {why[first]}; fix the line or skip bad rows ({{option}})",
                        option="skip_bad_rows")
    keep_rows = pa.array(~rowbad)
    labels = (to_numpy(lab.filter(keep_rows).cast(pa.float64())) > 0).astype(np.float32)
    return num_fields, labels, [t.filter(keep_rows) for t in toks], nbad


def _check_tokens(flat, num_fields: int, lineno: np.ndarray, why: dict[int, str]):
    """Labels and per-field category tokens of well-sized lines (``flat``: their tokens, row-major).

    Returns ``(labels, tokens per field, bad-row mask)``; the first problem of each bad line goes in ``why``.
    """
    import pyarrow as pa
    import pyarrow.compute as pc

    width, m = num_fields + 1, len(lineno)
    lab = flat.take(pa.array(np.arange(0, m * width, width, dtype=np.int64)))
    lab_ok = to_numpy(pc.match_substring_regex(lab, _LABEL_RE))
    rowbad = ~lab_ok
    if not lab_ok.all():
        i = int(np.flatnonzero(~lab_ok)[0])
        why.setdefault(int(lineno[i]), f"label {lab[i].as_py()!r} is not -1, 0 or 1")
    toks = []
    for f in range(num_fields):
        tok = flat.take(pa.array(np.arange(f + 1, m * width, width, dtype=np.int64)))
        ok = to_numpy(pc.match_substring_regex(tok, _TOKEN_RE))
        if not ok.all():
            i = int(np.flatnonzero(~ok)[0])
            why.setdefault(int(lineno[i]), f"token {tok[i].as_py()!r} of field f{f} is not idx or idx:val")
        rowbad |= ~ok
        toks.append(pc.replace_substring_regex(tok, ":.*$", ""))
    return lab, toks, rowbad
