"""What a sweep runs: :class:`SweepConfig` (the grid and the shared training settings) and stage strings.

A stage string names the compression applied to each trained cell's inference checkpoint:

* ``q8`` / ``q4`` / ``q2`` ... ``q8`` — symmetric quantization with one scale per table
  (:class:`~mlet_compress.QuantConfig` ``bits``, ``granularity="table"``); ``q8row`` — one scale per row;
* ``svd:rank=R`` / ``svd:energy=E`` — truncated SVD (:class:`~mlet_compress.LowRankConfig`);
* a chain joined by ``+`` — ``svd:rank=2+q8`` applies the stages in order.

Hashing is a training-time stage: it is a grid option (``hash_ratios``), not a stage string.

Example:
    >>> [type(c).__name__ for c in parse_stage("svd:rank=2+q8row")]
    ['LowRankConfig', 'QuantConfig']
    >>> parse_stage("q4")[0].bits
    4
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from typing import Any, Optional

from ..config import LowRankConfig, QuantConfig
from ..data.spec import DataSpec
from ..errors import ConfigError
from ..models import MODELS
from ..training.config import SELECT
from .cells import Cell, grid_cells

_QUANT = re.compile(r"q([2-8])(row)?")
_SVD = re.compile(r"svd:(rank|energy)=([^+:=]+)")
#: The stage of the trained (collapsed, uncompressed) checkpoint itself.
NO_STAGE = "none"


def _stage_token(token: str, text: str) -> Any:
    """One ``+``-separated token of a stage string as a library config."""
    where = f"stage token {token!r} (in {text!r})" if token != text else f"stage {token!r}"
    if _QUANT.fullmatch(token):
        m = _QUANT.fullmatch(token)
        return QuantConfig(bits=int(m.group(1)), granularity="row" if m.group(2) else "table")
    m = _SVD.fullmatch(token)
    if m:
        key, value = m.group(1), m.group(2)
        try:
            num = int(value) if key == "rank" else float(value)
        except ValueError:
            raise ConfigError(f"{where}: {key} must be a number, got {value!r}") from None
        try:
            return LowRankConfig(**{key: num})
        except ConfigError as exc:
            raise ConfigError(f"{where}: {exc}") from None
    if token.startswith("hash"):
        raise ConfigError(f"{where}: hashing is a training-time stage; sweep it with {{hash_ratios}}",
                          options={"hash_ratios": ...})
    raise ConfigError(f"{where} is not a stage; use q2..q8, q8row, svd:rank=R, svd:energy=E, or a chain "
                      "joined by '+' such as svd:rank=2+q8")


def parse_stage(text: str) -> list[Any]:
    """The library configs of one stage string, in application order.

    Args:
        text: ``q8``, ``q4``, ``q8row``, ``svd:energy=0.95``, ``svd:rank=2`` or a ``+`` chain of them.

    Returns:
        A list of :class:`~mlet_compress.LowRankConfig` / :class:`~mlet_compress.QuantConfig`.

    Raises:
        ConfigError: a malformed token (the one-line message names it).

    Example:
        >>> parse_stage("svd:energy=0.95")[0].energy
        0.95
    """
    text = str(text).strip()
    if not text or text == NO_STAGE:
        raise ConfigError(f"stage {text!r} is empty; the uncompressed checkpoint ({NO_STAGE!r}) is always evaluated")
    tokens = text.split("+")
    if any(not t for t in tokens):
        raise ConfigError(f"stage {text!r} has an empty token; join stages with a single '+'")
    configs = [_stage_token(t, text) for t in tokens]
    quant_at = [i for i, c in enumerate(configs) if isinstance(c, QuantConfig)]
    if quant_at and quant_at[0] != len(configs) - 1:
        raise ConfigError(f"stage {text!r}: quantization must be the last token (a table is quantized once)")
    return configs


def _positive_ints(name: str, values: Any, minimum: int = 1) -> tuple[int, ...]:
    out = tuple(values)
    if not out:
        raise ConfigError(f"{name} needs at least one value")
    for v in out:
        if isinstance(v, bool) or not isinstance(v, int) or v < minimum:
            raise ConfigError(f"{name}: {v!r} must be an integer >= {minimum}")
    if len(set(out)) != len(out):
        raise ConfigError(f"{name}: {list(out)} repeats a value")
    return out


@dataclass
class SweepConfig:
    """A sweep: a grid of cells (model × arm × d × k × lr multiplier × hash ratio × seed) and how each trains.

    Attributes:
        models: model names (``dlrm``, ``deepfm``, ...).
        dims: embedding dimensions d.
        ks: MLET inner dimensions k (one MLET arm each).
        seeds: training seeds (paired across arms: every arm trains with every seed).
        tune_baseline: also train every arm at each of ``emb_lr_mults``; the best on validation per
            (model, arm, d, k, hash ratio, seed) is the arm's tuned pick (MLET gets the same budget).
        emb_lr_mults: embedding learning-rate multipliers of the tuning (×1 is the paper's setting).
        stages: stage strings applied to every cell's inference checkpoint (see :func:`parse_stage`).
        hash_ratios: also train every arm with its tables hashed to these fractions of their rows.
        epochs / patience / select / batch_size / optimizer / lr / init_std / calibrate /
            max_steps_per_epoch / hash_min_rows / eval_batch_size / device: as
            :class:`~mlet_compress.train.TrainConfig`.
        data: the :class:`~mlet_compress.data.DataSpec` (synthetic default).

    Example:
        >>> cfg = SweepConfig(dims=(4, 8), ks=(32,), seeds=(0, 1), tune_baseline=True, stages=("q8", "svd:rank=2"))
        >>> len(cfg.cells())                    # 2 dims x 2 seeds x (single, MLET) x 3 lr multipliers
        24
    """

    models: tuple[str, ...] = ("dlrm",)
    dims: tuple[int, ...] = (4, 8, 16)
    ks: tuple[int, ...] = (64,)
    seeds: tuple[int, ...] = (0, 1, 2)
    tune_baseline: bool = False
    emb_lr_mults: tuple[float, ...] = (1.0, 4.0, 10.0)
    stages: tuple[str, ...] = ("q8", "q4", "svd:energy=0.95")
    hash_ratios: tuple[float, ...] = ()
    epochs: int = 1
    patience: Optional[int] = 2
    select: str = "auc"
    batch_size: int = 128
    optimizer: Optional[str] = None
    lr: Optional[float] = None
    init_std: Optional[float] = None
    calibrate: bool = False
    max_steps_per_epoch: Optional[int] = None
    hash_min_rows: int = 1000
    eval_batch_size: int = 4096
    device: str = "auto"
    data: DataSpec = field(default_factory=DataSpec)

    def __post_init__(self) -> None:
        if isinstance(self.data, dict):
            self.data = DataSpec.from_dict(self.data)
        self.models = tuple(str(m).lower() for m in self.models)
        unknown = [m for m in self.models if m not in MODELS]
        if not self.models or unknown:
            raise ConfigError(f"models {list(self.models)}: unknown {unknown}; use {', '.join(sorted(MODELS))}")
        self.dims = _positive_ints("dims", self.dims)
        self.ks = _positive_ints("ks (MLET k)", self.ks)
        self.seeds = _positive_ints("seeds", self.seeds, minimum=0)
        self.emb_lr_mults = tuple(float(m) for m in self.emb_lr_mults)
        self.hash_ratios = tuple(float(r) for r in self.hash_ratios)
        self.stages = tuple(str(s).strip() for s in self.stages)
        self._check()

    def _check(self) -> None:
        if any(m <= 0 for m in self.emb_lr_mults) or len(set(self.emb_lr_mults)) != len(self.emb_lr_mults):
            raise ConfigError(f"emb_lr_mults {list(self.emb_lr_mults)} must be distinct and > 0")
        if self.tune_baseline and 1.0 not in self.emb_lr_mults:
            raise ConfigError(f"emb_lr_mults {list(self.emb_lr_mults)} must include 1 (the paper's setting)")
        if any(not 0 < r < 1 for r in self.hash_ratios) or len(set(self.hash_ratios)) != len(self.hash_ratios):
            raise ConfigError(f"hash_ratios {list(self.hash_ratios)} must be distinct and in (0, 1)")
        if len(set(self.stages)) != len(self.stages):
            raise ConfigError(f"stages {list(self.stages)} repeat a stage")
        for s in self.stages:
            parse_stage(s)
        if self.select not in SELECT:
            raise ConfigError(f"select must be one of {SELECT}, got {self.select!r}")
        if not isinstance(self.epochs, int) or self.epochs < 1:
            raise ConfigError(f"epochs must be an integer >= 1, got {self.epochs!r}")

    def lr_mults(self) -> tuple[float, ...]:
        """The multipliers every arm trains with: ``emb_lr_mults`` when tuning, else ``(1.0,)``."""
        return self.emb_lr_mults if self.tune_baseline else (1.0,)

    def cells(self) -> list[Cell]:
        """Every cell of the grid, in the (deterministic) order they run (:func:`~.cells.grid_cells`)."""
        return grid_cells(self)

    def fingerprint(self) -> dict[str, Any]:
        """The options that change a finished cell's results (a resumed sweep must keep them)."""
        keys = ("stages", "epochs", "patience", "select", "batch_size", "optimizer", "lr", "init_std", "calibrate",
                "max_steps_per_epoch", "hash_min_rows", "eval_batch_size", "device")
        out = {k: list(v) if isinstance(v, tuple) else v for k, v in ((k, getattr(self, k)) for k in keys)}
        return {**out, "data": self.data.to_dict()}

    def to_dict(self) -> dict[str, Any]:
        """JSON-able fields (inverse of :meth:`from_dict`)."""
        d = dataclasses.asdict(self)
        d["data"] = self.data.to_dict()
        return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "SweepConfig":
        """Rebuild from :meth:`to_dict` output.

        Raises:
            ConfigError: unknown keys or invalid values.
        """
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - names
        if unknown:
            raise ConfigError(f"SweepConfig: unknown option(s) {sorted(unknown)}; valid: {sorted(names)}")
        return cls(**d)


__all__ = ["SweepConfig", "Cell", "parse_stage", "NO_STAGE"]
