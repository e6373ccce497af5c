"""Tables as row sources: a tensor or a ``read_rows(start, stop)`` callable, read in checked chunks.

Every streaming op (:mod:`.svd`, :mod:`.quant`) takes a table as an n×d tensor or as
``read_rows(start, stop) -> Tensor`` plus ``num_rows`` (a memory-mapped checkpoint tensor, a collapsed
MLET table computed on the fly, ...). :func:`as_row_reader` normalises both; :func:`iter_chunks` yields
checked row chunks; :func:`raise_nonfinite` names the first NaN/Inf row.
"""

from __future__ import annotations

from typing import Callable, Iterator, Optional, Union

import torch
from torch import Tensor

from ..errors import ConfigError, NumericalError

ReadRows = Callable[[int, int], Tensor]
TableLike = Union[Tensor, ReadRows]
DEFAULT_CHUNK_ROWS = 65536


def as_row_reader(table: TableLike, num_rows: Optional[int] = None, *, name: str = "table") -> tuple[ReadRows, int]:
    """Normalise a 2-D tensor or a ``read_rows(start, stop)`` callable into ``(read_rows, num_rows)``.

    Args:
        table: an n×d floating tensor, or a callable returning rows ``[start, stop)`` of one.
        num_rows: required with a callable; must match the tensor's row count otherwise.
        name: the table's name, used in error messages.

    Returns:
        ``(read_rows, num_rows)``.

    Raises:
        ConfigError: not 2-D, not floating point, 0 rows, or ``num_rows`` missing/mismatched.

    Example:
        >>> read, n = as_row_reader(torch.zeros(5, 3)); read(1, 3).shape, n
        (torch.Size([2, 3]), 5)
    """
    if isinstance(table, Tensor):
        if table.dim() != 2:
            raise ConfigError(f"{name}: expected a 2-D table (rows × dim), got shape {tuple(table.shape)}")
        check_float(table, name)
        if num_rows is not None and num_rows != table.shape[0]:
            raise ConfigError(f"{name}: num_rows={num_rows} but the tensor has {table.shape[0]} rows; drop num_rows")
        num_rows = table.shape[0]
        data = table.detach()
        read: ReadRows = lambda start, stop: data[start:stop]  # noqa: E731
    elif callable(table):
        if num_rows is None:
            raise ConfigError(f"{name}: a read_rows callable needs num_rows=<row count>")
        read = table
    else:
        raise ConfigError(f"{name}: expected a tensor or a read_rows(start, stop) callable, got {type(table).__name__}")
    if int(num_rows) <= 0:
        raise ConfigError(f"{name}: table has {num_rows} rows; nothing to compress")
    return read, int(num_rows)


def check_float(t: Tensor, name: str) -> None:
    """Raise :class:`ConfigError` unless ``t`` is a real floating-point tensor."""
    if not t.is_floating_point():
        raise ConfigError(f"{name}: dtype {t.dtype} is not floating point; only float tables can be compressed")


def iter_chunks(read: ReadRows, num_rows: int, chunk_rows: int, *, name: str = "table",
                dim: Optional[int] = None) -> Iterator[tuple[int, int, Tensor]]:
    """Yield ``(start, stop, rows)`` over ``[0, num_rows)``, checking each chunk's shape and dtype."""
    if int(chunk_rows) <= 0:
        raise ConfigError(f"{name}: chunk_rows={chunk_rows} must be positive")
    for start in range(0, num_rows, chunk_rows):
        stop = min(num_rows, start + chunk_rows)
        rows = read(start, stop)
        if not isinstance(rows, Tensor) or rows.dim() != 2 or rows.shape[0] != stop - start:
            got = tuple(rows.shape) if isinstance(rows, Tensor) else type(rows).__name__
            raise ConfigError(f"{name}: read_rows({start}, {stop}) returned {got}, expected {stop - start} rows × dim")
        if rows.shape[1] == 0:
            raise ConfigError(f"{name}: rows have 0 columns; nothing to compress")
        if dim is not None and rows.shape[1] != dim:
            raise ConfigError(f"{name}: rows {start}:{stop} have dim {rows.shape[1]}, expected {dim}")
        check_float(rows, name)
        yield start, stop, rows


def raise_nonfinite(rows: Tensor, start: int, name: str) -> None:
    """Raise :class:`NumericalError` naming the first row of ``rows`` (offset ``start``) holding NaN/Inf."""
    bad = ~torch.isfinite(rows).all(dim=1)
    if not bool(bad.any()):
        raise NumericalError(f"{name}: rows {start}:{start + rows.shape[0]} overflow float64 when squared; "
                             "rescale the table before compressing it")
    first = int(bad.nonzero()[0, 0])
    n_bad = int((~torch.isfinite(rows)).sum())
    raise NumericalError(
        f"{name}: row {start + first} holds NaN/Inf ({n_bad} non-finite value(s) in rows {start}:{start + rows.shape[0]}); "
        "fix or drop the table before compressing it"
    )


__all__ = ["ReadRows", "TableLike", "DEFAULT_CHUNK_ROWS", "as_row_reader", "check_float", "iter_chunks", "raise_nonfinite"]
