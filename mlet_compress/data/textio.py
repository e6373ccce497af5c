"""Vectorised reading of delimited text files with exact line numbers on the error path.

``read_delimited`` first tries ``pyarrow.csv.read_csv`` (multi-threaded, typed columns). If that
fails (wrong column count, a non-numeric value in a numeric column) or a column validator rejects a
value, the file is read again on a *diagnostic path*: the raw bytes are cut into lines with numpy
(``np.flatnonzero(bytes == '\\n')``), each line split with ``pyarrow.compute.split_pattern``, and
every check is done column-wise, so the 1-based physical line of each bad row is known. Strict mode
then raises :class:`DataError` naming the file and line; ``skip_bad_rows=True`` drops the bad rows
and counts them. Exactly-empty lines are ignored on both paths. The diagnostic path splits naively
on the delimiter (quoted fields containing the delimiter are not supported there).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from ..errors import DataError
from .types import RawColumn

# pyarrow is imported inside the functions that use it (lean import): `import mlet_compress.data` and the
# synthetic path never load it.

_INT_RE = r"^[+-]?[0-9]+$"
_FLOAT_RE = r"^[+-]?([0-9]+(\.[0-9]*)?|\.[0-9]+)([eE][+-]?[0-9]+)?$|^[+-]?(?i:nan|inf|infinity)$"
_FALLBACK_BLOCK = 64 << 20
FAST_BLOCK = 4 << 20

Validator = Callable[[object], np.ndarray]


@dataclass
class ColSpec:
    """How to read one column.

    Attributes:
        kind: ``"int"`` (int64), ``"float"`` (float64), ``"cat"`` (dictionary string) or ``"str"``.
            Empty values become null for every kind.
        validator: optional ``f(typed_array) -> bool ndarray`` (True = valid); a False row is a bad row.
        why: text for the error message when the validator rejects a value.
    """

    kind: str
    validator: Validator | None = None
    why: str = "invalid value"


def to_numpy(arr) -> np.ndarray:
    """A pyarrow Array/ChunkedArray as a numpy array (nulls of float columns become NaN)."""
    return np.asarray(arr.to_numpy(zero_copy_only=False))


def _arrow_type(kind: str):
    import pyarrow as pa

    return {"int": pa.int64(), "float": pa.float64(), "cat": pa.dictionary(pa.int32(), pa.string()),
            "str": pa.string()}[kind]


def read_delimited(
    path: Path, *, delimiter: str, names: list[str], header_lines: int, specs: dict[str, ColSpec],
    skip_bad_rows: bool = False, encoding: str = "utf8", quoted: bool = False,
    progress: Callable[[str], None] | None = None,
):
    """Read the ``specs`` columns of a delimited file.

    Args:
        path: the file.
        delimiter: one character.
        names: the names of *all* columns in file order (the expected column count is ``len(names)``).
        header_lines: lines to skip at the top (0 or 1).
        specs: the columns to return, by name, with their :class:`ColSpec`.
        skip_bad_rows: drop malformed rows instead of raising.
        encoding: the file's text encoding.
        quoted: honour ``"`` quoting on the fast path.
        progress: optional callback receiving one-line status messages.

    Returns:
        ``(table, skipped)``: a ``pyarrow.Table`` with the ``specs`` columns in ``specs`` order and the
        number of rows skipped.

    Raises:
        DataError: a malformed row in strict mode (message: ``<file>: line <n>: <reason>``).

    Example:
        >>> # table, skipped = read_delimited(p, delimiter="\\t", names=["y", "a"], header_lines=0,
        >>> #                                 specs={"y": ColSpec("int"), "a": ColSpec("cat")})
    """
    import pyarrow as pa
    import pyarrow.csv as pacsv

    table = None
    try:
        table = pacsv.read_csv(
            path,
            read_options=pacsv.ReadOptions(column_names=names, skip_rows=header_lines, encoding=encoding,
                                           block_size=FAST_BLOCK),
            parse_options=pacsv.ParseOptions(delimiter=delimiter, quote_char='"' if quoted else False,
                                             ignore_empty_lines=True),
            convert_options=pacsv.ConvertOptions(
                column_types={n: _arrow_type(s.kind) for n, s in specs.items()}, include_columns=list(specs),
                null_values=[""], strings_can_be_null=True, quoted_strings_can_be_null=True),
        )
    except (pa.ArrowInvalid, UnicodeDecodeError):
        table = None
    if table is not None and all(
        s.validator is None or bool(np.all(s.validator(table.column(n)))) for n, s in specs.items()
    ):
        return table, 0
    if progress is not None:
        progress(f"{path.name}: malformed rows found, locating them line by line")
    return _diagnostic_read(path, delimiter, names, header_lines, specs, skip_bad_rows, encoding, quoted)


def iter_line_blocks(path: Path, encoding: str):
    """Yield (line_offset, bytes ending at a line boundary, utf-8) blocks of ~64 MiB."""
    offset, rest = 0, b""
    with open_binary(path) as fh:
        while True:
            chunk = fh.read(_FALLBACK_BLOCK)
            buf = rest + chunk
            if not chunk:
                if buf:
                    yield offset, buf.decode(encoding, errors="replace").encode("utf-8")
                return
            cut = buf.rfind(b"\n")
            if cut < 0:
                rest = buf
                continue
            block, rest = buf[: cut + 1], buf[cut + 1:]
            yield offset, block.decode(encoding, errors="replace").encode("utf-8")
            offset += block.count(b"\n")


def lines_array(buf: bytes):
    import pyarrow as pa
    import pyarrow.compute as pc

    arr = np.frombuffer(buf, np.uint8)
    ends = np.flatnonzero(arr == 10) + 1
    if len(arr) and arr[-1] != 10:
        ends = np.append(ends, len(arr))
    offsets = np.concatenate([[0], ends]).astype(np.int64)
    lines = pa.LargeStringArray.from_buffers(len(ends), pa.py_buffer(offsets), pa.py_buffer(buf))
    return pc.utf8_rtrim(lines, characters="\r\n")


def _convert(vals, spec: ColSpec):
    """Typed array and a bool mask of values that failed conversion."""
    import pyarrow as pa
    import pyarrow.compute as pc

    vals = vals.cast(pa.string())
    null = pa.scalar(None, pa.string())
    if spec.kind in ("cat", "str"):
        typed = pc.if_else(pc.equal(vals, ""), null, vals)
        if spec.kind == "cat":
            typed = typed.dictionary_encode()
        return typed, np.zeros(len(vals), bool)
    trimmed = pc.utf8_trim_whitespace(vals)
    empty = to_numpy(pc.equal(trimmed, ""))
    ok = to_numpy(pc.match_substring_regex(trimmed, _INT_RE if spec.kind == "int" else _FLOAT_RE)) | empty
    keep = pa.array(ok & ~empty)
    typed = pc.if_else(keep, trimmed, null).cast(_arrow_type(spec.kind))
    return typed, ~ok


def _diagnostic_read(path, delimiter, names, header_lines, specs, skip_bad_rows, encoding, quoted):
    import pyarrow as pa
    import pyarrow.compute as pc

    ncols = len(names)
    pos = {n: names.index(n) for n in specs}
    out, skipped = [], 0
    for line0, buf in iter_line_blocks(path, encoding):
        lines = lines_array(buf)
        lineno = line0 + 1 + np.arange(len(lines))
        keep = (lineno > header_lines) & (to_numpy(pc.utf8_length(lines)) > 0)
        lines, lineno = lines.filter(pa.array(keep)), lineno[keep]
        if quoted:
            lines = pc.replace_substring_regex(lines, '"', "")
        parts = pc.split_pattern(lines, delimiter)
        counts = to_numpy(pc.list_value_length(parts))
        good = counts == ncols
        bad_line = np.full(len(lines), np.iinfo(np.int64).max)
        reasons: dict[int, str] = {}
        if not good.all():
            first = int(np.flatnonzero(~good)[0])
            reasons[int(lineno[first])] = f"expected {ncols} columns, got {int(counts[first])}"
            bad_line[~good] = lineno[~good]
        m = int(good.sum())
        flat = pc.list_flatten(parts.filter(pa.array(good)))
        gl = lineno[good]
        cols, row_bad = {}, np.zeros(m, bool)
        for name, spec in specs.items():
            vals = flat.take(pa.array(np.arange(pos[name], m * ncols, ncols, dtype=np.int64)))
            typed, conv_bad = _convert(vals, spec)
            bad = conv_bad.copy()
            why = f"column {name!r} value {{v!r}} is not {'an integer' if spec.kind == 'int' else 'a number'}"
            if spec.validator is not None:
                vbad = ~np.asarray(spec.validator(typed), bool) & ~conv_bad
                bad |= vbad
                if vbad.any():
                    i = int(np.flatnonzero(vbad)[0])
                    reasons.setdefault(int(gl[i]), f"column {name!r} value {vals[i].as_py()!r}: {spec.why}")
            if conv_bad.any():
                i = int(np.flatnonzero(conv_bad)[0])
                reasons.setdefault(int(gl[i]), why.format(v=vals[i].as_py()))
            row_bad |= bad
            cols[name] = typed
        bad_line[np.flatnonzero(good)[row_bad]] = gl[row_bad]
        nbad = int((bad_line != np.iinfo(np.int64).max).sum())
        if nbad and not skip_bad_rows:
            first_line = int(bad_line.min())
            reason = reasons.get(first_line, "malformed row")
            raise DataError(f"{path}: line {first_line}: {reason}; fix the line or skip bad rows ({{option}})",
                            option="skip_bad_rows")
        skipped += nbad
        keep_rows = pa.array(~row_bad)
        out.append(pa.table({n: c.filter(keep_rows) for n, c in cols.items()}))
    if not out:
        return pa.table({n: pa.array([], _arrow_type(s.kind)) for n, s in specs.items()}), 0
    tables = [t.cast(out[0].schema) if t.schema != out[0].schema else t for t in out]
    return pa.concat_tables(tables, promote_options="permissive") if len(tables) > 1 else tables[0], skipped


def sniff_first_line(path: Path, encoding: str = "utf8") -> str:
    """The first line of ``path`` without its line ending ('' for an empty file)."""
    if not path.is_file():
        raise DataError(f"data file {path} does not exist or is not a file; check the path")
    with open_binary(path) as fh:
        head = fh.read(1 << 20).split(b"\n", 1)[0]
    return head.decode(encoding, errors="replace").rstrip("\r\n")


COMPRESSED_SUFFIXES = (".gz", ".bz2", ".zst", ".lz4")


def open_binary(path: Path):
    """Open ``path`` for binary reading, decompressing ``.gz``/``.bz2``/``.zst``/``.lz4`` on the fly."""
    if Path(path).suffix.lower() in COMPRESSED_SUFFIXES:
        import pyarrow as pa

        return pa.input_stream(str(path), compression="detect")
    return open(path, "rb")


def raw_column(arr):
    """A pyarrow (chunked) string or dictionary column as a :class:`RawColumn` (null and '' -> -1)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if isinstance(arr, pa.Array):
        arr = pa.chunked_array([arr])
    if not pa.types.is_dictionary(arr.type):
        if not pa.types.is_string(arr.type) and not pa.types.is_large_string(arr.type):
            arr = arr.cast(pa.string())
        arr = pc.dictionary_encode(arr)
    arr = pa.table({"c": arr}).unify_dictionaries().column(0)
    if arr.num_chunks == 0:
        return RawColumn(np.zeros(0, np.int32), pa.array([], pa.string()))
    keys = arr.chunk(0).dictionary.cast(pa.string())
    codes = np.concatenate([to_numpy(pc.fill_null(ch.indices, -1)) for ch in arr.chunks]).astype(np.int32)
    empty = to_numpy(pc.equal(keys, "")).astype(bool)
    if empty.any():
        codes[np.isin(codes, np.flatnonzero(empty))] = -1
    return RawColumn(codes, keys)


def dense_matrix(columns: list, n: int) -> np.ndarray:
    """Numeric pyarrow columns as a float64 ``[n, D]`` matrix (nulls -> NaN)."""
    out = np.empty((n, len(columns)), np.float64)
    for j, c in enumerate(columns):
        out[:, j] = to_numpy(c.cast("float64"))
    return out


def in_set(values) -> Validator:
    """A validator accepting non-null values in ``values``."""
    def check(arr) -> np.ndarray:
        import pyarrow as pa
        import pyarrow.compute as pc

        return to_numpy(pc.fill_null(pc.is_in(arr, value_set=pa.array(list(values), arr.type)), False))
    return check


def is_int_text(s: str) -> bool:
    """True when ``s`` (stripped) is an optionally signed decimal integer."""
    t = s.strip()
    if t[:1] in ("+", "-"):
        t = t[1:]
    return t.isascii() and t.isdigit()
