"""Per-field vocabularies and the dense transform, fitted on the training split only.

Vocabulary rule: in each field, a category seen at least ``min_freq`` times in the *training* rows
gets an id ``1..V-1``; ids are assigned by decreasing training count, ties broken by the key (text
order for text keys, numeric order for integer keys), so id 1 is the most frequent category. Rarer
categories, categories never seen in training and missing values all map to id 0 (OOV/missing).
``vocab_sizes[f] = V`` includes id 0. ``train_counts[f][i]`` is how often id ``i`` occurs in the
transformed training split (entry 0 counts the OOV/missing rows).

Dense transforms: ``"log1p"`` = ``log(1 + max(x, 0))`` (Criteo's integer counts; negatives clipped
to 0), ``"standardize"`` = ``(x - mean) / std`` with the training mean/std (std 0 -> 1), ``"none"``.
Missing values (NaN) become 0 after every transform (for ``standardize``: the training mean).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..errors import ConfigError, DataError
from .types import RawColumn, RawTable, TabularData

# pyarrow is imported inside the functions that use it (lean import): `import mlet_compress.data` and the
# synthetic path never load it.

DENSE_TRANSFORMS = ("log1p", "standardize", "none")
_VERSION = 1


def _is_int_keys(keys: Any) -> bool:
    return isinstance(keys, np.ndarray) and np.issubdtype(keys.dtype, np.integer)


def _as_text(keys: Any):
    import pyarrow as pa

    if isinstance(keys, np.ndarray):
        return pa.array(keys.astype(str).tolist(), pa.string())
    return keys.cast(pa.string())


class Preprocessor:
    """Vocabularies + dense transform; fit on train, apply to any split; JSON round trip.

    Attributes:
        field_names: categorical field names (``F``).
        dense_names: dense column names (``D``).
        vocab_sizes: per field, number of ids including the OOV id 0.
        train_counts: per field, int64 count of each id in the training split.
        min_freq: the vocabulary threshold used.
        dense_transform: one of ``"log1p"``, ``"standardize"``, ``"none"``.

    Example:
        >>> # pre = Preprocessor.fit(raw, train_idx, min_freq=2, dense_transform="log1p")
        >>> # data = pre.transform(raw); same = Preprocessor.from_dict(pre.to_dict())
    """

    def __init__(self, field_names: list[str], dense_names: list[str], vocabs: list[Any],
                 train_counts: list[np.ndarray], *, min_freq: int = 1, dense_transform: str = "none",
                 dense_mean: np.ndarray | None = None, dense_std: np.ndarray | None = None) -> None:
        if dense_transform not in DENSE_TRANSFORMS:
            raise ConfigError(f"dense_transform {dense_transform!r} is unknown; use one of {DENSE_TRANSFORMS}")
        if not (len(field_names) == len(vocabs) == len(train_counts)):
            raise ConfigError(f"Preprocessor: {len(field_names)} field names, {len(vocabs)} vocabularies and "
                              f"{len(train_counts)} count arrays; they must match")
        self.field_names = list(field_names)
        self.dense_names = list(dense_names)
        self.vocabs = list(vocabs)  # numpy int64 arrays or pyarrow string arrays, id = position + 1
        self.vocab_sizes = [len(v) + 1 for v in vocabs]
        self.train_counts = [np.asarray(c, np.int64) for c in train_counts]
        for name, v, c in zip(self.field_names, self.vocab_sizes, self.train_counts):
            if len(c) != v:
                raise ConfigError(f"field {name!r}: train_counts has {len(c)} entries, vocabulary {v}; they must match")
        self.min_freq = int(min_freq)
        self.dense_transform = dense_transform
        d = len(self.dense_names)
        self.dense_mean = np.zeros(d) if dense_mean is None else np.asarray(dense_mean, np.float64)
        self.dense_std = np.ones(d) if dense_std is None else np.asarray(dense_std, np.float64)

    # ----------------------------------------------------------------------------------------- fit
    @classmethod
    def fit(cls, raw: RawTable, idx: np.ndarray | None = None, *, min_freq: int = 1,
            dense_transform: str = "none") -> "Preprocessor":
        """Build vocabularies and dense statistics from rows ``idx`` (None = all) of ``raw``.

        Raises:
            ConfigError: ``min_freq < 1`` or an unknown dense transform.
        """
        if int(min_freq) < 1:
            raise ConfigError(f"min_freq={min_freq} must be >= 1 (1 keeps every category seen in training)")
        sel = slice(None) if idx is None else np.asarray(idx)
        vocabs, counts = [], []
        for col in raw.columns:
            codes = col.codes[sel]
            nkeys = len(col.keys)
            cnt = np.bincount(codes[codes >= 0], minlength=nkeys)
            keep = np.flatnonzero(cnt >= min_freq)
            if _is_int_keys(col.keys):
                order = np.lexsort((col.keys[keep], -cnt[keep]))
                vocab = col.keys[keep[order]].astype(np.int64)
            else:
                import pyarrow as pa
                import pyarrow.compute as pc

                k = _as_text(col.keys).take(pa.array(keep))
                order = np.asarray(pc.sort_indices(pa.table({"c": cnt[keep], "k": k}),
                                                   sort_keys=[("c", "descending"), ("k", "ascending")]))
                vocab = k.take(pa.array(order))
            lut = np.zeros(nkeys, np.int64)
            lut[keep[order]] = np.arange(1, len(keep) + 1)
            ids = np.where(codes >= 0, lut[np.maximum(codes, 0)], 0)
            vocabs.append(vocab)
            counts.append(np.bincount(ids, minlength=len(keep) + 1).astype(np.int64))
        dense = raw.dense[sel]
        mean = std = None
        if dense_transform == "standardize" and dense.shape[1]:
            with np.errstate(all="ignore"):
                finite = np.isfinite(dense)
                n = finite.sum(0)
                mean = np.where(n > 0, np.where(finite, dense, 0).sum(0) / np.maximum(n, 1), 0.0)
                var = np.where(finite, (dense - mean) ** 2, 0).sum(0) / np.maximum(n, 1)
                std = np.sqrt(var)
                std = np.where(std > 0, std, 1.0)
        return cls(raw.field_names, raw.dense_names, vocabs, counts, min_freq=min_freq,
                   dense_transform=dense_transform, dense_mean=mean, dense_std=std)

    # ----------------------------------------------------------------------------------- transform
    def encode(self, f: int, col: RawColumn) -> np.ndarray:
        """Ids (int64) of field ``f`` for a raw column (any dictionary)."""
        vocab = self.vocabs[f]
        if len(vocab) == 0:
            lut = np.zeros(len(col.keys), np.int64)
        elif _is_int_keys(vocab) and _is_int_keys(col.keys):
            sorter = np.argsort(vocab, kind="stable")
            sv = vocab[sorter]
            pos = np.minimum(np.searchsorted(sv, col.keys), len(sv) - 1)
            lut = np.where(sv[pos] == col.keys, sorter[pos] + 1, 0)
        else:
            import pyarrow.compute as pc

            hit = pc.index_in(_as_text(col.keys), value_set=_as_text(vocab))
            lut = np.asarray(pc.fill_null(hit, -1).to_numpy(zero_copy_only=False), np.int64) + 1
        lut = np.append(np.asarray(lut, np.int64), 0)  # code -1 (missing) picks the trailing 0
        return lut[col.codes]

    def transform_dense(self, dense: np.ndarray) -> np.ndarray:
        """Apply the dense transform to raw values (NaN = missing) -> float32."""
        x = np.asarray(dense, np.float64)
        if self.dense_transform == "log1p":
            x = np.log1p(np.where(x > 0, x, 0.0))  # NaN and negatives -> 0
        elif self.dense_transform == "standardize":
            x = (x - self.dense_mean) / self.dense_std
        out = x.astype(np.float32)
        np.copyto(out, np.float32(0), where=~np.isfinite(out))
        return out

    def transform(self, raw: RawTable) -> TabularData:
        """Apply vocabularies and the dense transform to every row of ``raw``.

        Raises:
            DataError: ``raw`` has other fields or dense columns than the fitted ones.
        """
        if raw.field_names != self.field_names or raw.dense_names != self.dense_names:
            raise DataError(
                f"data has fields {raw.field_names} / dense {raw.dense_names} but the preprocessor was fitted on "
                f"{self.field_names} / {self.dense_names}; use files of the same layout and options"
            )
        n = len(raw)
        sparse = np.zeros((n, len(self.field_names)), np.int64)
        for f, col in enumerate(raw.columns):
            sparse[:, f] = self.encode(f, col)
        return TabularData(self.transform_dense(raw.dense), sparse, raw.labels.astype(np.float32))

    # ------------------------------------------------------------------------------------ JSON
    def to_dict(self) -> dict:
        """JSON-able dict (vocabulary keys as text or integers)."""
        vocabs, types = [], []
        for v in self.vocabs:
            if _is_int_keys(v):
                vocabs.append([int(x) for x in v])
                types.append("int")
            else:
                vocabs.append(v.to_pylist())
                types.append("str")
        return {
            "version": _VERSION, "field_names": self.field_names, "dense_names": self.dense_names,
            "vocab_sizes": self.vocab_sizes, "key_types": types, "vocabs": vocabs,
            "train_counts": [c.tolist() for c in self.train_counts], "min_freq": self.min_freq,
            "dense_transform": self.dense_transform, "dense_mean": self.dense_mean.tolist(),
            "dense_std": self.dense_std.tolist(),
        }

    @classmethod
    def from_dict(cls, d: dict) -> "Preprocessor":
        """Inverse of :meth:`to_dict`.

        Raises:
            ConfigError: missing keys, unknown version or inconsistent sizes.
        """
        try:
            if d["version"] != _VERSION:
                raise ConfigError(f"preprocessor version {d['version']!r} is not supported (expected {_VERSION})")
            vocabs = []
            for keys, t in zip(d["vocabs"], d["key_types"]):
                if t == "int":
                    vocabs.append(np.asarray(keys, np.int64).reshape(-1))
                else:
                    import pyarrow as pa

                    vocabs.append(pa.array([str(k) for k in keys], pa.string()))
            pre = cls(d["field_names"], d["dense_names"], vocabs, [np.asarray(c, np.int64) for c in d["train_counts"]],
                      min_freq=d["min_freq"], dense_transform=d["dense_transform"],
                      dense_mean=np.asarray(d["dense_mean"], np.float64), dense_std=np.asarray(d["dense_std"], np.float64))
        except (KeyError, TypeError) as exc:
            raise ConfigError(f"preprocessor dict is missing or has a bad entry ({exc!r}); save it with to_dict()") from exc
        if list(d["vocab_sizes"]) != pre.vocab_sizes:
            raise ConfigError(f"preprocessor dict: vocab_sizes {d['vocab_sizes']} disagree with the vocabularies "
                              f"{pre.vocab_sizes}; the dict is corrupted")
        return pre

    def __repr__(self) -> str:
        return (f"Preprocessor(fields={len(self.field_names)}, dense={len(self.dense_names)}, "
                f"vocab_sizes={self.vocab_sizes}, min_freq={self.min_freq}, dense_transform={self.dense_transform!r})")


def sample_log_frequency(preprocessor: Preprocessor, sparse: np.ndarray) -> np.ndarray:
    """Per-sample log of the product of its categories' training frequencies (paper §4.2).

    ``out[i] = Σ_f log(count_f(sparse[i, f]))`` with ``count_f`` = the category's count in the training
    split. Id 0 (OOV: unseen, rarer than ``min_freq``, or missing) counts as 0 occurrences and
    contributes ``log(0.5)``, i.e. it ranks below every category seen in training. (Missing values
    share id 0, so they also count as rare.)

    Args:
        preprocessor: the fitted preprocessor (its ``train_counts``).
        sparse: int ``[N, F]`` ids.

    Returns:
        float64 ``[N]``.

    Raises:
        DataError: wrong number of fields or ids out of range.

    Example:
        >>> # log_freq = sample_log_frequency(splits.preprocessor, splits.test.sparse)
    """
    sparse = np.asarray(sparse)
    if sparse.ndim != 2 or sparse.shape[1] != len(preprocessor.field_names):
        raise DataError(f"sparse has shape {sparse.shape}; expected [N, {len(preprocessor.field_names)}] ids")
    out = np.zeros(sparse.shape[0], np.float64)
    for f, counts in enumerate(preprocessor.train_counts):
        ids = sparse[:, f]
        if len(ids) and (ids.min() < 0 or ids.max() >= len(counts)):
            raise DataError(f"field {preprocessor.field_names[f]!r}: ids span [{ids.min()}, {ids.max()}] but the "
                            f"vocabulary has {len(counts)} ids; encode with the same preprocessor")
        logc = np.log(np.maximum(counts.astype(np.float64), 0.5))
        logc[0] = np.log(0.5)
        out += logc[ids]
    return out
