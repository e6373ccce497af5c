"""In-memory containers of the data pipeline.

:class:`TabularData` and :class:`DataSplits` are public (what the trainer consumes). :class:`RawColumn`
and :class:`RawTable` are the readers' output before the vocabularies are applied: each categorical
field is stored dictionary-encoded (``codes`` into ``keys``, -1 = missing), so that a vocabulary built
on the training rows can be applied to any file with one small lookup table per field.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import ConfigError, DataError

if TYPE_CHECKING:  # pragma: no cover
    from .vocab import Preprocessor


@dataclass
class TabularData:
    """Preprocessed CTR samples held in memory.

    Attributes:
        dense: float32 ``[N, D]`` transformed numeric features (``D`` may be 0).
        sparse: int64 ``[N, F]`` per-field category ids in ``0..vocab_sizes[f]-1``; id 0 is the
            field's OOV/missing id.
        labels: float32 ``[N]`` click labels in ``{0, 1}``.

    Example:
        >>> import numpy as np
        >>> d = TabularData(np.zeros((3, 0), np.float32), np.zeros((3, 2), np.int64), np.ones(3, np.float32))
        >>> len(d.subset(np.array([0, 2])))
        2
    """

    dense: np.ndarray
    sparse: np.ndarray
    labels: np.ndarray

    def __post_init__(self) -> None:
        n = len(self.labels)
        if self.dense.ndim != 2 or self.sparse.ndim != 2 or self.labels.ndim != 1:
            raise DataError(
                f"TabularData: dense/sparse must be 2-D and labels 1-D, got shapes {self.dense.shape}, "
                f"{self.sparse.shape}, {self.labels.shape}; reshape the arrays"
            )
        if self.dense.shape[0] != n or self.sparse.shape[0] != n:
            raise DataError(
                f"TabularData: row counts differ (dense {self.dense.shape[0]}, sparse {self.sparse.shape[0]}, "
                f"labels {n}); pass arrays with the same number of rows"
            )

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    @property
    def num_fields(self) -> int:
        """Number of categorical fields ``F``."""
        return int(self.sparse.shape[1])

    @property
    def num_dense(self) -> int:
        """Number of dense features ``D``."""
        return int(self.dense.shape[1])

    def subset(self, idx: np.ndarray) -> "TabularData":
        """Rows ``idx`` (integer indices or a boolean mask) as a new :class:`TabularData` (copies)."""
        idx = np.asarray(idx)
        return TabularData(self.dense[idx], self.sparse[idx], self.labels[idx])


@dataclass
class DataSplits:
    """Train/validation/test splits plus the preprocessor fitted on the training split.

    Attributes:
        train, val, test: the three splits.
        preprocessor: vocabularies and dense transform, fitted on ``train`` only.
        info: JSON-able provenance: format, sources (paths, sizes, sha256), options, split rule and
            seed, row counts, ``skipped_bad_rows``, cache key/hit.
    """

    train: TabularData
    val: TabularData
    test: TabularData
    preprocessor: "Preprocessor"
    info: dict = field(default_factory=dict)


@dataclass
class RawColumn:
    """One categorical field, dictionary-encoded.

    Attributes:
        codes: int32/int64 ``[N]`` indices into ``keys``; -1 = missing.
        keys: the distinct raw values, a ``pyarrow`` string array or a numpy integer array.
    """

    codes: np.ndarray
    keys: Any

    def take(self, idx: np.ndarray) -> "RawColumn":
        return RawColumn(self.codes[idx], self.keys)


@dataclass
class RawTable:
    """A reader's output: labels, raw dense values (NaN = missing) and dictionary-encoded fields."""

    labels: np.ndarray
    dense: np.ndarray
    dense_names: list[str]
    field_names: list[str]
    columns: list[RawColumn]
    skipped: int = 0
    sources: list[dict] = field(default_factory=list)

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def take(self, idx: np.ndarray) -> "RawTable":
        """Rows ``idx`` (the dictionaries are shared, not copied)."""
        return RawTable(
            self.labels[idx], self.dense[idx], list(self.dense_names), list(self.field_names),
            [c.take(idx) for c in self.columns], self.skipped, list(self.sources),
        )

    def select(self, categorical: list[str] | None, numeric: list[str] | None) -> "RawTable":
        """Keep only the named fields / dense columns (None keeps all); unknown names raise ConfigError."""
        fields, cols = self.field_names, self.columns
        if categorical is not None:
            missing = [c for c in categorical if c not in self.field_names]
            if missing:
                raise ConfigError(
                    f"categorical columns {missing} not in this data; available fields: {self.field_names}"
                )
            pos = [self.field_names.index(c) for c in categorical]
            fields, cols = [fields[p] for p in pos], [cols[p] for p in pos]
        dense, dnames = self.dense, self.dense_names
        if numeric is not None:
            missing = [c for c in numeric if c not in self.dense_names]
            if missing:
                raise ConfigError(
                    f"numeric columns {missing} not in this data; available dense columns: {self.dense_names}"
                )
            pos = [self.dense_names.index(c) for c in numeric]
            dense, dnames = self.dense[:, pos], [dnames[p] for p in pos]
        return RawTable(self.labels, dense, list(dnames), list(fields), list(cols), self.skipped,
                        list(self.sources))

