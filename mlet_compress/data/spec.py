""":class:`DataSpec`: what to read and how to preprocess and split it (one value stored with every run).

``load_dataset(spec)`` reads it; ``load_eval_split(spec, ...)`` rebuilds a run's test split from it;
``TrainConfig.data`` holds one, so a run directory's ``config.json`` records the exact data of the run.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from typing import Any, Optional, Union

from ..errors import ConfigError
from .synthetic import SyntheticConfig
from .vocab import DENSE_TRANSFORMS

#: Data formats ``load_dataset`` reads (``parquet`` is accepted as an alias of ``csv``).
FORMATS = ("criteo", "avazu", "movielens", "libfm", "csv", "synthetic")


def check_format(fmt: str) -> str:
    """The canonical (lower-case) format name; ``parquet`` becomes ``csv``.

    Raises:
        ConfigError: ``fmt`` is not one of :data:`FORMATS` (or ``parquet``).
    """
    f = str(fmt).lower()
    if f == "parquet":
        f = "csv"
    if f not in FORMATS:
        raise ConfigError(f"data format {fmt!r} is unknown; use one of {FORMATS}")
    return f


def _path_str(value: Any) -> Any:
    return os.fspath(value) if isinstance(value, os.PathLike) else value


@dataclass
class DataSpec:
    """Where the data comes from and how it is preprocessed and split (stored with every run).

    Validated on construction (and again by ``load_dataset``); round-trips through JSON
    (:meth:`to_dict` / :meth:`from_dict`).

    Attributes:
        path: data file (movielens: folder or ``.inter``/``u.data`` file); ``None`` with
            ``format="synthetic"`` (the embedded generator). Path objects are stored as strings.
        format: ``synthetic``, ``criteo``, ``avazu``, ``movielens``, ``libfm`` or ``csv`` (``parquet`` is
            read as ``csv``).
        label: label column of the ``csv`` format (default: label/click/target/y); other formats have a
            fixed label.
        categorical / numeric: column lists of the ``csv`` format, or a subset of the format's fields /
            dense columns (``None``: all).
        val_data / test_data: pre-split files of the same format (no split drawn from ``path`` for them).
        min_freq: categories seen fewer times in training map to the field's out-of-vocabulary id 0.
        seed: seed of the random split; independent of the training seed so that several training seeds
            see the same split (the synthetic rows come from ``synthetic["seed"]``).
        skip_bad_rows: skip and count malformed rows instead of failing (file formats).
        cache_dir: where parsed arrays are cached (``None``/``True``: ``$MLET_CACHE_DIR`` or
            ``~/.cache/mlet-compress``; ``False``: no cache).
        synthetic: keyword arguments of :class:`SyntheticConfig` (``None``: its defaults); a
            ``SyntheticConfig`` is stored as its dict.
        numeric_transform: ``log1p``, ``standardize`` or ``none`` (``None``: criteo ``log1p``, csv
            ``standardize``, others ``none``); file formats only.

    Example:
        >>> spec = DataSpec(format="synthetic", synthetic={"num_rows": 5000})
        >>> DataSpec.from_dict(spec.to_dict()) == spec
        True
    """

    path: Optional[str] = None
    format: str = "synthetic"
    label: Optional[str] = None
    categorical: Optional[list[str]] = None
    numeric: Optional[list[str]] = None
    val_data: Optional[str] = None
    test_data: Optional[str] = None
    min_freq: int = 1
    seed: int = 0
    skip_bad_rows: bool = False
    cache_dir: Optional[Union[str, bool]] = None
    synthetic: Optional[dict[str, Any]] = None
    numeric_transform: Optional[str] = None

    def __post_init__(self) -> None:
        for name in ("path", "val_data", "test_data", "cache_dir"):
            setattr(self, name, _path_str(getattr(self, name)))
        if isinstance(self.synthetic, SyntheticConfig):
            self.synthetic = self.synthetic.to_dict()
        self.validate()

    def validate(self) -> None:
        """Check the fields (called on construction and by the loaders, in case a field was changed).

        Raises:
            ConfigError: naming the field, its value and the fix.
        """
        fmt = check_format(self.format)
        if fmt == "synthetic":
            if self.path is not None or self.val_data is not None or self.test_data is not None:
                raise ConfigError("format 'synthetic' takes no path/val_data/test_data; pass path=None "
                                  "(or a file format with the path)")
            if self.numeric_transform is not None:
                raise ConfigError(f"numeric_transform={self.numeric_transform!r} applies to file formats; the "
                                  "synthetic dense features are already N(0, 1): drop it")
            if self.synthetic is not None:
                self.synthetic_config()  # unknown keys raise here
        elif not self.path:
            raise ConfigError(f"data format {self.format!r} needs a data path ({{data}})", options={"data": ...})
        if self.label is not None and fmt != "csv":
            raise ConfigError(f"label={self.label!r} applies to format 'csv' only; format {fmt!r} has a fixed label")
        if isinstance(self.categorical, str) or isinstance(self.numeric, str):
            raise ConfigError("categorical/numeric take a list of column names, not a string; wrap it in [...]")
        if self.numeric_transform is not None and self.numeric_transform not in DENSE_TRANSFORMS:
            raise ConfigError(f"numeric_transform={self.numeric_transform!r} is unknown; use one of {DENSE_TRANSFORMS}")
        if not isinstance(self.min_freq, int) or self.min_freq < 1:
            raise ConfigError(f"min_freq={self.min_freq!r} must be an integer >= 1 "
                              "(1 keeps every category seen in training)")

    def synthetic_config(self) -> SyntheticConfig:
        """The generator settings as a :class:`SyntheticConfig` (its defaults when ``synthetic`` is None).

        Raises:
            ConfigError: ``synthetic`` holds a key that ``SyntheticConfig`` does not have.
        """
        if not self.synthetic:
            return SyntheticConfig()
        names = {f.name for f in dataclasses.fields(SyntheticConfig)}
        unknown = set(self.synthetic) - names
        if unknown:
            raise ConfigError(f"DataSpec.synthetic: unknown option(s) {sorted(unknown)}; valid: {sorted(names)}")
        return SyntheticConfig.from_dict(self.synthetic)

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable fields (inverse of :meth:`from_dict`)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "DataSpec":
        """Rebuild from :meth:`to_dict` output (a missing key takes its default).

        Raises:
            ConfigError: an unknown key, or an invalid value.
        """
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - names
        if unknown:
            raise ConfigError(f"DataSpec: unknown option(s) {sorted(unknown)}; valid: {sorted(names)}")
        return cls(**d)


__all__ = ["DataSpec", "FORMATS", "check_format"]
