"""Configuration dataclasses for MLET and the compression stages, validated on construction.

Each config round-trips through JSON (``to_dict`` / ``from_dict``) so it can be stored in a checkpoint.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Optional, Union

from .errors import ConfigError
from .ops.hashing import buckets_for

Targets = Optional[Union[str, list[str]]]


def _check_targets(name: str, value: Targets) -> None:
    if value is None or isinstance(value, str):
        return
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
        raise ConfigError(f"{name} must be a regex string or a list of module names/suffixes, got {value!r}")


def _check_chunk_rows(value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"chunk_rows must be a positive integer, got {value!r}")


class _JSONConfig:
    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict of the fields (inverse of :meth:`from_dict`)."""
        out = dataclasses.asdict(self)  # type: ignore[call-overload]
        for k, v in out.items():
            if isinstance(v, tuple):
                out[k] = list(v)
        return out

    @classmethod
    def from_dict(cls, d: dict[str, Any]):
        """Build the config from :meth:`to_dict` output; unknown keys are an error."""
        names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
        unknown = set(d) - names
        if unknown:
            raise ConfigError(f"{cls.__name__}: unknown option(s) {sorted(unknown)}; valid: {sorted(names)}")
        return cls(**d)


@dataclass
class TargetSpec(_JSONConfig):
    """Which embedding modules a stage applies to (shared by every config).

    ``target_modules``: ``None`` = every embedding module; a string = regex that must *fully* match the
    module name; a list = module names or dotted suffixes (``"user"`` matches ``"emb.tables.user"``).
    ``exclude_modules``: same forms, applied after ``target_modules``.
    """

    target_modules: Targets = None
    exclude_modules: Targets = None

    def __post_init__(self) -> None:
        _check_targets("target_modules", self.target_modules)
        _check_targets("exclude_modules", self.exclude_modules)


@dataclass
class MLETConfig(TargetSpec):
    """Settings of :func:`mlet_compress.wrap`.

    Attributes:
        inner_dim: inner width k of the n×k table (paper: 64 is a strong default; k > d).
        target_modules / exclude_modules: see :class:`TargetSpec`.
        min_embedding_dim: tables narrower than this are skipped (default 2: skips 1-dim "linear" tables).
        inner_dims: per-table k, keyed by module name or suffix; overrides ``inner_dim``.
        init_std: std of the Gaussian projection (paper: 0.25 DLRM, 0.5 other models).
        table_init: ``"match"`` (Gaussian with the replaced table's std: keeps the model's own init
            scale), ``"normal"`` (N(0,1), torch's default), ``"xavier_uniform"`` (paper), ``"uniform"`` (DLRM).
        preserve_function: initialise the factors so ``table @ proj.T`` equals the existing weight
            (wrapping a trained model then does not change its outputs; needs k ≥ d).
        sparse: force sparse table gradients on/off; ``None`` keeps each module's own ``sparse``.
        seed: optional seed for the factor initialisation (reproducible wraps).
    """

    inner_dim: int = 64
    min_embedding_dim: int = 2
    inner_dims: Optional[dict[str, int]] = None
    init_std: float = 0.25
    table_init: str = "match"
    preserve_function: bool = False
    sparse: Optional[bool] = None
    seed: Optional[int] = None

    def __post_init__(self) -> None:
        super().__post_init__()
        if not isinstance(self.inner_dim, int) or self.inner_dim < 1:
            raise ConfigError(f"inner_dim must be a positive integer, got {self.inner_dim!r}")
        if self.min_embedding_dim < 1:
            raise ConfigError(f"min_embedding_dim must be >= 1, got {self.min_embedding_dim}")
        for name, k in (self.inner_dims or {}).items():
            if not isinstance(k, int) or k < 1:
                raise ConfigError(f"inner_dims[{name!r}] must be a positive integer, got {k!r}")
        if not self.init_std > 0:
            raise ConfigError(f"init_std must be > 0, got {self.init_std}; tiny values stall MLET (paper Fig. 4)")
        if self.table_init not in ("match", "normal", "xavier_uniform", "uniform"):
            raise ConfigError(
                f"table_init={self.table_init!r}; choose one of match, normal, xavier_uniform, uniform"
            )


@dataclass
class CollapseConfig(TargetSpec):
    """Collapse MLET factors into one n×d table (what :func:`mlet_compress.collapse` does to a model).

    ``check`` compares the collapsed lookups with the MLET ones on ``probe_rows`` random rows (float64
    reference) and refuses NaN/Inf; ``chunk_rows`` bounds the memory of a streaming checkpoint collapse.
    """

    check: bool = True
    probe_rows: int = 1024
    chunk_rows: int = 65536

    def __post_init__(self) -> None:
        super().__post_init__()
        if isinstance(self.probe_rows, bool) or not isinstance(self.probe_rows, int) or self.probe_rows < 1:
            raise ConfigError(f"probe_rows must be a positive integer, got {self.probe_rows!r}")
        _check_chunk_rows(self.chunk_rows)


@dataclass
class LowRankConfig(TargetSpec):
    """Truncated-SVD stage: keep ``rank`` singular directions, or the fewest that retain ``energy``."""

    rank: Optional[int] = None
    energy: Optional[float] = None
    chunk_rows: int = 65536

    def __post_init__(self) -> None:
        super().__post_init__()
        if (self.rank is None) == (self.energy is None):
            raise ConfigError("LowRankConfig needs exactly one of rank=R or energy=E")
        if self.rank is not None and (not isinstance(self.rank, int) or self.rank < 1):
            raise ConfigError(f"rank must be an integer >= 1, got {self.rank!r}")
        if self.energy is not None and not (0.0 < self.energy <= 1.0):
            raise ConfigError(f"energy must be in (0, 1], got {self.energy!r}")
        _check_chunk_rows(self.chunk_rows)


@dataclass
class QuantConfig(TargetSpec):
    """Uniform symmetric quantization with an L2 grid-searched scale (paper §4.3).

    ``bits`` 2–8; ``granularity`` ``"table"`` (paper) or ``"row"``; ``grid`` candidate clipping
    thresholds (fractions of max|w|); ``scale_dtype`` ``"fp32"`` or ``"fp16"``: how the scales are stored
    (fp16 halves a per-row scale's bytes — 4 → 2 per row — and costs at most 2^-11·‖Ŵ‖ of L2 error;
    the codes are computed with the rounded scales).
    """

    bits: int = 8
    granularity: str = "table"
    grid: int = 100
    chunk_rows: int = 65536
    scale_dtype: str = "fp32"

    def __post_init__(self) -> None:
        super().__post_init__()
        if not isinstance(self.bits, int) or not 2 <= self.bits <= 8:
            raise ConfigError(f"bits must be an integer in 2..8, got {self.bits!r}")
        if self.granularity not in ("table", "row"):
            raise ConfigError(f"granularity must be 'table' or 'row', got {self.granularity!r}")
        if not isinstance(self.grid, int) or self.grid < 1:
            raise ConfigError(f"grid must be a positive number of candidates, got {self.grid!r}")
        if self.scale_dtype not in ("fp32", "fp16"):
            raise ConfigError(f"scale_dtype must be 'fp32' or 'fp16', got {self.scale_dtype!r}")
        _check_chunk_rows(self.chunk_rows)


@dataclass
class HashConfig(TargetSpec):
    """Modulo hashing of indices into ``num_buckets`` rows (or ``ceil(ratio * n)``), a training-time stage.

    Tables with fewer than ``min_rows`` rows stay untouched (the paper hashed only the two largest
    Avazu tables to half size).
    """

    ratio: Optional[float] = None
    num_buckets: Optional[int] = None
    min_rows: int = 1000
    min_embedding_dim: int = 2

    def __post_init__(self) -> None:
        super().__post_init__()
        if (self.ratio is None) == (self.num_buckets is None):
            raise ConfigError("HashConfig needs exactly one of ratio=R or num_buckets=M")
        if self.ratio is not None and not (0.0 < self.ratio < 1.0):
            raise ConfigError(f"hash ratio must be in (0, 1), got {self.ratio!r}")
        if self.num_buckets is not None and (not isinstance(self.num_buckets, int) or self.num_buckets < 1):
            raise ConfigError(f"num_buckets must be a positive integer, got {self.num_buckets!r}")
        if self.min_rows < 1:
            raise ConfigError(f"min_rows must be >= 1, got {self.min_rows}")

    def buckets_for(self, num_rows: int) -> int:
        """Rows of the hashed table for a table of ``num_rows`` rows (never more than ``num_rows``)."""
        return buckets_for(num_rows, ratio=self.ratio, num_buckets=self.num_buckets)
