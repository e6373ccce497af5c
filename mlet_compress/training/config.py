"""Training settings: :class:`TrainConfig` (how to train), holding a :class:`DataSpec` (what to read).

``DataSpec`` lives in :mod:`mlet_compress.data.spec` (the data package does not depend on training) and
is re-exported here. Both are dataclasses validated on construction that round-trip through JSON
(``to_dict`` / ``from_dict``), so a run directory's ``config.json`` rebuilds the exact run
(``--resume``, ``eval``).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Optional

from ..data.spec import DataSpec
from ..errors import ConfigError
from ..models import default_optimizer

OPTIMIZERS = ("sgd", "adagrad", "rowwise_adagrad")
SELECT = ("auc", "logloss")
ENGINES = ("torch", "torchrec")
#: TorchRec sharding types ``--sharding`` accepts; on CPU the planner refuses row_wise (it needs CUDA).
SHARDINGS = ("table_wise", "column_wise", "data_parallel", "row_wise")


def _from_dict(cls, d: dict[str, Any]):
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = set(d) - names
    if unknown:
        raise ConfigError(f"{cls.__name__}: unknown option(s) {sorted(unknown)}; valid: {sorted(names)}")
    return cls(**d)


@dataclass
class TrainConfig:
    """One training run. ``None`` fields take the paper's defaults for the model (see :meth:`resolved`).

    Attributes:
        model: one of ``mlet_compress.models.MODELS`` (``dlrm``, ``wdl``, ``deepfm``, ...).
        dim: embedding dimension d at inference.
        inner_dim: MLET inner dimension k (``MLETConfig.inner_dim``; the CLI's ``--mlet-k``); 0 trains plain
            single-layer tables. ``from_dict`` also reads the 0.1.0 name ``mlet_k``.
        init_std: std of MLET's Gaussian projection (paper: 0.25 DLRM, 0.5 others).
        hash_ratio: hash tables of >= ``hash_min_rows`` rows to this fraction of their rows (training-time).
        hash_min_rows: smallest table that is hashed.
        optimizer: ``sgd``, ``adagrad`` or ``rowwise_adagrad`` (paper: SGD for DLRM, Adagrad for the others;
            ``rowwise_adagrad``: one Adagrad accumulator per table row, see ``training.optim.RowWiseAdagrad``).
        lr: learning rate (paper: 0.2 SGD / 0.02 Adagrad).
        emb_lr_mult: learning-rate multiplier of the embedding parameters (tables, and MLET's
            table + projection) relative to the rest of the model.
        batch_size: global mini-batch (split evenly across DDP ranks).
        epochs: maximum number of epochs (paper: 1).
        patience: stop after this many epochs without a validation improvement (None: never stop early).
        select: validation metric that selects the epoch whose weights are kept: ``auc`` or ``logloss``.
        calibrate: fit one temperature on the validation split after training (post-hoc temperature
            scaling, :mod:`~mlet_compress.training.calibration`); stored in the checkpoint so ``eval`` applies it.
        seed: training seed (initialisation, shuffling).
        sparse_grads: sparse table gradients where the optimizer supports them (SGD w/o momentum, Adagrad).
        keep_factors: also save the uncollapsed MLET factors (``factors.safetensors``).
        save_state: save ``state.pt`` (model + optimizer state) after each epoch for ``--resume``.
        max_steps_per_epoch: stop each epoch after this many steps (smoke tests, benchmarks).
        eval_batch_size: batch size of validation/test inference.
        device: ``auto`` (CUDA when available), ``cpu``, ``cuda`` or ``cuda:N``.
        model_kwargs: extra model constructor arguments (JSON-serialisable).
        mlet_kwargs: extra ``MLETConfig`` arguments (``target_modules``, ``table_init``, ...).
        log_every: steps between progress callbacks.
        data: the :class:`DataSpec` of the run.
        engine: ``torch`` (the package's models, DDP under torchrun) or ``torchrec`` (DLRM only: TorchRec's
            ``EmbeddingBagCollection`` sharded by ``DistributedModelParallel``, :mod:`.torchrec_run`).
        sharding: the TorchRec sharding type of every table (``torchrec`` engine): ``table_wise``,
            ``column_wise``, ``data_parallel`` (``row_wise`` needs CUDA: the planner refuses it on CPU).

    Example:
        >>> cfg = TrainConfig(model="dlrm", dim=8, inner_dim=64).resolved()
        >>> cfg.optimizer, cfg.lr
        ('sgd', 0.2)
    """

    model: str = "dlrm"
    dim: int = 16
    inner_dim: int = 64
    init_std: Optional[float] = None
    hash_ratio: Optional[float] = None
    hash_min_rows: int = 1000
    optimizer: Optional[str] = None
    lr: Optional[float] = None
    emb_lr_mult: float = 1.0
    batch_size: int = 128
    epochs: int = 1
    patience: Optional[int] = 2
    select: str = "auc"
    calibrate: bool = False
    seed: int = 0
    sparse_grads: bool = True
    keep_factors: bool = False
    save_state: bool = True
    max_steps_per_epoch: Optional[int] = None
    eval_batch_size: int = 4096
    device: str = "auto"
    model_kwargs: dict[str, Any] = field(default_factory=dict)
    mlet_kwargs: dict[str, Any] = field(default_factory=dict)
    log_every: int = 10
    data: DataSpec = field(default_factory=DataSpec)
    engine: str = "torch"
    sharding: str = "table_wise"

    def __post_init__(self) -> None:
        if isinstance(self.data, dict):
            self.data = DataSpec.from_dict(self.data)
        checks = [
            (isinstance(self.dim, int) and self.dim >= 1, f"dim must be a positive integer, got {self.dim!r}"),
            (isinstance(self.inner_dim, int) and self.inner_dim >= 0,
             f"inner_dim (MLET k) must be an integer >= 0 (0 = single-layer), got {self.inner_dim!r}"),
            (self.init_std is None or self.init_std > 0, f"init_std must be > 0, got {self.init_std}"),
            (self.hash_ratio is None or 0.0 < self.hash_ratio < 1.0,
             f"hash_ratio must be in (0, 1), got {self.hash_ratio}"),
            (self.optimizer is None or self.optimizer in OPTIMIZERS,
             f"optimizer {self.optimizer!r} is not supported; use one of {', '.join(OPTIMIZERS)}"),
            (self.lr is None or self.lr > 0, f"lr must be > 0, got {self.lr}"),
            (self.emb_lr_mult > 0, f"emb_lr_mult must be > 0, got {self.emb_lr_mult}"),
            (isinstance(self.batch_size, int) and self.batch_size >= 1,
             f"batch_size must be a positive integer, got {self.batch_size!r}"),
            (isinstance(self.epochs, int) and self.epochs >= 1, f"epochs must be >= 1, got {self.epochs!r}"),
            (self.patience is None or self.patience >= 1,
             f"patience must be >= 1 (or None to never stop early), got {self.patience}"),
            (self.select in SELECT, f"select must be 'auc' or 'logloss', got {self.select!r}"),
            (self.max_steps_per_epoch is None or self.max_steps_per_epoch >= 1,
             f"max_steps_per_epoch must be >= 1, got {self.max_steps_per_epoch}"),
            (self.eval_batch_size >= 1, f"eval_batch_size must be >= 1, got {self.eval_batch_size}"),
            (self.log_every >= 1, f"log_every must be >= 1, got {self.log_every}"),
            (self.engine in ENGINES, f"engine must be one of {', '.join(ENGINES)}, got {self.engine!r}"),
            (self.sharding in SHARDINGS, f"sharding must be one of {', '.join(SHARDINGS)}, got {self.sharding!r}"),
            (self.engine == "torchrec" or self.sharding == "table_wise",
             f"sharding={self.sharding!r} applies to the TorchRec engine only; add engine='torchrec'"),
        ]
        for ok, msg in checks:
            if not ok:
                raise ConfigError(msg)

    @property
    def is_mlet(self) -> bool:
        """True when the embedding tables are trained as MLET factors (``inner_dim > 0``)."""
        return self.inner_dim > 0

    @property
    def variant(self) -> str:
        """A short label: ``single d=16`` or ``MLET k=64 d=16`` (plus the lr multiplier when not 1)."""
        base = f"MLET k={self.inner_dim} d={self.dim}" if self.is_mlet else f"single d={self.dim}"
        if self.emb_lr_mult != 1.0:
            base += f" emb-lr×{self.emb_lr_mult:g}"
        return base

    def resolved(self) -> "TrainConfig":
        """A copy with ``optimizer``, ``lr`` and ``init_std`` filled from the model's paper defaults.

        Raises:
            ConfigError: unknown model name.
        """
        d = default_optimizer(self.model)
        return dataclasses.replace(
            self,
            optimizer=self.optimizer or d["optimizer"],
            lr=self.lr if self.lr is not None else float(d["lr"]),
            init_std=self.init_std if self.init_std is not None else float(d["init_std"]),
            data=DataSpec.from_dict(self.data.to_dict()),
            model_kwargs=dict(self.model_kwargs),
            mlet_kwargs=dict(self.mlet_kwargs),
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable fields (inverse of :meth:`from_dict`)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "TrainConfig":
        """Rebuild from :meth:`to_dict` output (a missing key takes its default).

        The 0.1.0 key ``mlet_k`` is read as ``inner_dim``, so older ``config.json`` / ``state.pt`` files
        still resume and evaluate.

        Raises:
            ConfigError: an unknown key, both ``mlet_k`` and ``inner_dim``, or an invalid value.

        Example:
            >>> TrainConfig.from_dict({"model": "dlrm", "mlet_k": 32}).inner_dim
            32
        """
        d = dict(d)
        if "mlet_k" in d:
            if "inner_dim" in d:
                raise ConfigError(
                    f"TrainConfig: both 'mlet_k' ({d['mlet_k']!r}, the 0.1.0 name) and 'inner_dim' "
                    f"({d['inner_dim']!r}) given; keep only inner_dim"
                )
            d["inner_dim"] = d.pop("mlet_k")
        return _from_dict(cls, d)


__all__ = ["TrainConfig", "DataSpec", "OPTIMIZERS", "SELECT", "ENGINES", "SHARDINGS"]
