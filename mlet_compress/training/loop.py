"""The epoch loop: seeded shuffling, optimizer steps, validation, epoch selection and early stopping.

Pure training mechanics; it knows nothing of files (the caller passes ``FitHooks.on_epoch_end`` to save
state). :func:`fit` runs epochs of :func:`epoch_order` (shuffle + DDP shard), :func:`train_step` (loss,
regulariser, hook, optimizer step) and :class:`LossWindow` (progress and NaN check), then
:func:`validate` and :func:`update_selection` (best epoch, early stopping).
"""

from __future__ import annotations

import dataclasses
import math
import time
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError, NumericalError
from ..metrics import evaluate
from .config import SELECT
from .ddp import DistInfo, all_mean, per_rank_batch, shard_indices
from .predict import TensorData, predict, unwrap

EvaluateFn = Callable[[np.ndarray, np.ndarray], dict[str, Any]]


class TrainCallback:
    """Progress hooks called on the main process (rank 0). Subclass and override what you need.

    The library never prints; the CLI implements these with a rich progress bar on stderr.
    """

    def on_run_start(self, name: str, total_steps: int) -> None:
        """A training run named ``name`` starts; ``total_steps`` is the number of steps if no early stop."""

    def on_step(self, step: int, loss: float, samples_per_s: float) -> None:
        """``step`` steps are done; ``loss`` is a running mean of the recent training loss."""

    def on_epoch_end(self, epoch: int, record: dict[str, Any]) -> None:
        """Epoch ``epoch`` (1-based) finished; ``record`` holds ``train_loss``, ``val`` metrics, ``seconds``."""

    def on_info(self, text: str) -> None:
        """A line worth showing before training starts (the TorchRec engine's sharding plan)."""

    def on_run_end(self, name: str, metrics: dict[str, Any]) -> None:
        """The run finished; ``metrics`` is the content of ``metrics.json``."""


@dataclass(frozen=True)
class LoopSettings:
    """How :func:`fit` loops (the loop fields of a ``TrainConfig``, same names and meaning).

    Attributes:
        epochs: maximum number of epochs (counted including those of a resumed ``FitState``).
        batch_size: global batch (split evenly across DDP ranks).
        seed: shuffling seed (epoch ``e`` uses ``seed * 1_000_003 + e``).
        select: validation metric that selects the kept epoch: ``auc`` (higher is better) or ``logloss``.
        patience: stop after this many epochs without improvement (None: never stop early).
        max_steps_per_epoch: cap on the steps of each epoch (None: the whole split).
        eval_batch_size: batch of validation inference.
        log_every: steps between progress callbacks (and loss read-backs / NaN checks).

    Example:
        >>> LoopSettings(epochs=3, batch_size=256, patience=1).select
        'auc'
    """

    epochs: int
    batch_size: int
    seed: int = 0
    select: str = "auc"
    patience: Optional[int] = None
    max_steps_per_epoch: Optional[int] = None
    eval_batch_size: int = 4096
    log_every: int = 10

    def __post_init__(self) -> None:
        def positive(v: Any) -> bool:
            return isinstance(v, int) and not isinstance(v, bool) and v >= 1

        checks = [
            (positive(self.epochs), f"epochs must be an integer >= 1, got {self.epochs!r}"),
            (positive(self.batch_size), f"batch_size must be an integer >= 1, got {self.batch_size!r}"),
            (isinstance(self.seed, int), f"seed must be an integer, got {self.seed!r}"),
            (self.select in SELECT, f"select must be one of {SELECT}, got {self.select!r}"),
            (self.patience is None or positive(self.patience),
             f"patience must be an integer >= 1 (or None to never stop early), got {self.patience!r}"),
            (self.max_steps_per_epoch is None or positive(self.max_steps_per_epoch),
             f"max_steps_per_epoch must be an integer >= 1 (or None), got {self.max_steps_per_epoch!r}"),
            (positive(self.eval_batch_size), f"eval_batch_size must be an integer >= 1, got {self.eval_batch_size!r}"),
            (positive(self.log_every), f"log_every must be an integer >= 1, got {self.log_every!r}"),
        ]
        for ok, msg in checks:
            if not ok:
                raise ConfigError(f"LoopSettings: {msg}")

    @classmethod
    def from_config(cls, cfg: Any) -> "LoopSettings":
        """The loop settings of a ``TrainConfig`` (or any object with these attribute names)."""
        return cls(**{f.name: getattr(cfg, f.name) for f in dataclasses.fields(cls)})


@dataclass
class FitHooks:
    """Callables :func:`fit` calls; every one is optional.

    Attributes:
        callback: progress hooks (called on rank 0 only).
        on_epoch_end: called with the :class:`FitState` after each epoch (before the early-stopping
            decision takes effect), e.g. to save ``state.pt``.
        after_backward: called after each ``backward()`` (DDP: all-reduce of sparse tables DDP ignores).
    """

    callback: Optional[TrainCallback] = None
    on_epoch_end: Optional[Callable[["FitState"], None]] = None
    after_backward: Optional[Callable[[], None]] = None


@dataclass
class FitState:
    """Where the loop stands; saved in ``state.pt`` and restored by ``--resume``."""

    epoch: int = 0  # epochs completed
    step: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)
    best_epoch: int = 0
    best_score: Optional[float] = None
    best_state: Optional[dict[str, torch.Tensor]] = None
    bad_epochs: int = 0
    stopped_early: bool = False


def steps_per_epoch(n_rows: int, batch_size: int, info: DistInfo, max_steps: Optional[int]) -> int:
    """Number of optimizer steps of one epoch on each rank."""
    rows = -(-n_rows // info.world_size)
    steps = -(-rows // per_rank_batch(batch_size, info))
    return min(steps, max_steps) if max_steps else steps


def epoch_order(n_rows: int, seed: int, epoch: int, info: DistInfo) -> torch.Tensor:
    """This rank's row order of epoch ``epoch`` (1-based): a permutation seeded by ``(seed, epoch)``, sharded.

    Every rank draws the same permutation, so a resumed run sees the same order as an uninterrupted one.

    Args:
        n_rows: rows of the training split.
        seed: the shuffling seed (``LoopSettings.seed``).
        epoch: the 1-based epoch.
        info: DDP placement (each rank takes every ``world_size``-th row, see ``shard_indices``).

    Returns:
        int64 row indices of this rank, in visiting order.

    Example:
        >>> epoch_order(6, seed=0, epoch=1, info=DistInfo()).sort().values.tolist()
        [0, 1, 2, 3, 4, 5]
    """
    gen = torch.Generator().manual_seed(int(seed) * 1_000_003 + epoch)
    return shard_indices(torch.randperm(n_rows, generator=gen), info)


def train_step(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    batch: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
    after_backward: Optional[Callable[[], None]] = None,
) -> torch.Tensor:
    """One optimizer step on a batch; returns the detached mean BCE loss.

    The optimized loss is the mean binary cross-entropy plus ``model.reg_loss / batch`` when the model
    sets one during its training forward (the models sum their L2 term over the batch, matching
    DeepCTR-Torch's sum-reduced BCE).

    Args:
        model: the model (optionally DDP-wrapped) in train mode, mapping ``(dense, sparse)`` to logits.
        optimizer: its optimizer.
        batch: ``(dense, sparse, labels)`` on the model's device.
        after_backward: called between ``backward()`` and ``step()`` (DDP's sparse all-reduce).

    Returns:
        The batch's mean BCE (without the regulariser), detached, on the device (no sync).
    """
    dense, sparse, labels = batch
    logits = model(dense, sparse)
    loss = F.binary_cross_entropy_with_logits(logits.reshape(-1).float(), labels)
    reg = getattr(unwrap(model), "reg_loss", None)
    # models sum their L2 term over the batch (DeepCTR's sum-reduced BCE); scale it to the mean BCE
    total = loss + reg / labels.numel() if isinstance(reg, torch.Tensor) else loss
    optimizer.zero_grad(set_to_none=True)
    total.backward()
    if after_backward is not None:
        after_backward()
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Sparse invariant checks")
        optimizer.step()
    return loss.detach()


class LossWindow:
    """The losses of the steps since the last report, read back from the device only at a report.

    :meth:`report` checks the window's mean for NaN/Inf, adds it to the epoch total and calls
    ``callback.on_step`` with the mean and the samples per second (over all ranks).
    """

    def __init__(self, epoch: int, callback: TrainCallback, world_size: int = 1) -> None:
        self.epoch, self.callback, self.world_size = epoch, callback, world_size
        self.total = 0.0  # sum of the per-step losses reported so far this epoch
        self.losses: list[torch.Tensor] = []
        self.rows = 0
        self.start = time.perf_counter()

    def add(self, loss: torch.Tensor, rows: int) -> None:
        """Record one step's (device) loss over ``rows`` rows of this rank (no device sync)."""
        self.losses.append(loss)
        self.rows += rows * self.world_size

    def report(self, step_in_epoch: int, global_step: int) -> float:
        """Check and report the window ending at 0-based step ``step_in_epoch``.

        Args:
            step_in_epoch: 0-based index of the window's last step within the epoch.
            global_step: steps done in the run so far (passed to ``on_step``).

        Returns:
            The mean loss of the window's steps.

        Raises:
            NumericalError: the mean loss of the window is NaN or Inf.
        """
        mean = float(torch.stack(self.losses).mean())
        if not math.isfinite(mean):
            raise NumericalError(
                f"training loss became {mean} at epoch {self.epoch} "
                f"(steps {step_in_epoch + 2 - len(self.losses)}-{step_in_epoch + 1}); "
                "lower {lr} or {init_std} (MLET diverges when the projection init is too large)",
                options={"lr": ..., "init_std": ...},
            )
        self.total += mean * len(self.losses)
        now = time.perf_counter()
        self.callback.on_step(global_step, mean, self.rows / max(now - self.start, 1e-9))
        self.losses, self.start, self.rows = [], now, 0
        return mean


def validate(
    model: nn.Module,
    val: Optional[TensorData],
    *,
    select: str,
    batch_size: int,
    device: torch.device,
    evaluate_fn: EvaluateFn = evaluate,
) -> tuple[Optional[dict[str, Any]], Optional[float]]:
    """Validation metrics and the higher-is-better selection score.

    Args:
        model: the model (optionally DDP-wrapped); evaluated in eval mode, its mode restored after.
        val: the validation split (None or empty: nothing to validate).
        select: ``auc`` or ``logloss``.
        batch_size: inference batch.
        device: where batches go.
        evaluate_fn: ``(labels, probs) -> metrics dict``.

    Returns:
        ``(metrics, score)``: ``metrics`` holds ``auc``/``logloss``/``pr_auc`` (None without validation
        rows); ``score`` is the ``select`` metric, negated for ``logloss`` (None without validation rows
        or when it is not finite, e.g. a single-class validation set gives no ranking signal).
    """
    if val is None or not len(val):
        return None, None
    probs = predict(model, val, batch_size, device)
    vm = evaluate_fn(val.labels.numpy().astype(np.float64), probs)
    metrics = {k: vm[k] for k in ("auc", "logloss", "pr_auc") if k in vm}
    value = float(vm[select])
    score = value if select == "auc" else -value
    return metrics, (score if math.isfinite(score) else None)


def _snapshot(value: Any) -> Any:
    """A CPU copy of a state-dict value; of a ShardedTensor (TorchRec engine), the list of this rank's shards."""
    if hasattr(value, "local_shards"):
        return [s.tensor.detach().to("cpu", copy=True) for s in value.local_shards()]
    return value.detach().to("cpu", copy=True)


def update_selection(st: FitState, model: nn.Module, score: Optional[float], settings: LoopSettings) -> None:
    """Keep epoch ``st.epoch``'s weights if it improved (or there is no score); count bad epochs, stop early.

    An epoch without a score (no validation) always counts as an improvement, so the last one is kept.
    Early stopping never triggers on the last allowed epoch (``stopped_early`` then means "stopped before
    ``settings.epochs``").

    Args:
        st: the loop state, ``st.epoch`` being the epoch just finished (updated in place).
        model: the model (optionally DDP-wrapped) whose weights are copied to CPU when kept.
        score: the epoch's higher-is-better validation score (None: no validation signal).
        settings: ``patience`` and ``epochs``.
    """
    if score is None or st.best_score is None or score > st.best_score:
        st.best_score, st.best_epoch, st.bad_epochs = score, st.epoch, 0
        st.best_state = {k: _snapshot(v) for k, v in unwrap(model).state_dict().items()}
    else:
        st.bad_epochs += 1
        if settings.patience is not None and st.bad_epochs >= settings.patience and st.epoch < settings.epochs:
            st.stopped_early = True


@dataclass
class _Fit:
    """What every epoch of one :func:`fit` call shares."""

    model: nn.Module
    optimizer: torch.optim.Optimizer
    settings: LoopSettings
    device: torch.device
    info: DistInfo
    callback: TrainCallback
    after_backward: Optional[Callable[[], None]]
    n_steps: int

    def train_epoch(self, data: TensorData, st: FitState, epoch: int) -> float:
        """Run epoch ``epoch``'s steps; returns the mean training loss over steps (and ranks)."""
        local_bs = per_rank_batch(self.settings.batch_size, self.info)
        order = epoch_order(len(data), self.settings.seed, epoch, self.info)
        window = LossWindow(epoch, self.callback, self.info.world_size)
        for i in range(self.n_steps):
            idx = order[i * local_bs : (i + 1) * local_bs]
            loss = train_step(self.model, self.optimizer, data.batch(idx, self.device), self.after_backward)
            st.step += 1
            window.add(loss, idx.numel())
            if (i + 1) % self.settings.log_every == 0 or i + 1 == self.n_steps:
                window.report(i, st.step)
        return all_mean(window.total / max(self.n_steps, 1), self.info)


def fit(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    train: TensorData,
    val: Optional[TensorData],
    settings: LoopSettings,
    *,
    device: torch.device,
    evaluate_fn: EvaluateFn = evaluate,
    info: DistInfo = DistInfo(),
    state: Optional[FitState] = None,
    hooks: Optional[FitHooks] = None,
) -> FitState:
    """Train for up to ``settings.epochs`` epochs, validating after each and keeping the best weights in memory.

    Args:
        model: the model (optionally DDP-wrapped), already on ``device``.
        optimizer: its optimizer.
        train / val: the splits as :class:`TensorData` (``val`` may be None or empty: then the last
            epoch is selected).
        settings: the :class:`LoopSettings` (epochs, batch, seed, selection, patience, ...).
        device: where batches go.
        evaluate_fn: ``(labels, probs) -> metrics dict`` for validation (default
            :func:`mlet_compress.metrics.evaluate`).
        info: DDP placement.
        state: a :class:`FitState` to continue from (``--resume``).
        hooks: progress callback, per-epoch hook and after-backward hook (:class:`FitHooks`).

    Returns:
        The final :class:`FitState`; ``best_state`` holds a CPU copy of the selected epoch's weights.

    Raises:
        NumericalError: the training loss became NaN/Inf.
        ConfigError: the batch is not divisible by the DDP world size.

    Example:
        >>> # fit(model, opt, train_t, val_t, LoopSettings(epochs=5, batch_size=256), device=torch.device("cpu"))
    """
    st = state or FitState()
    hooks = hooks or FitHooks()
    per_rank_batch(settings.batch_size, info)  # a global batch the ranks cannot split fails before training
    run = _Fit(model, optimizer, settings, device, info,
               hooks.callback if (hooks.callback is not None and info.is_main) else TrainCallback(),
               hooks.after_backward, steps_per_epoch(len(train), settings.batch_size, info, settings.max_steps_per_epoch))
    model.train()
    while st.epoch < settings.epochs and not st.stopped_early:
        epoch = st.epoch + 1
        t0 = time.perf_counter()
        record: dict[str, Any] = {"epoch": epoch, "train_loss": run.train_epoch(train, st, epoch), "steps": run.n_steps}
        metrics, score = validate(model, val, select=settings.select, batch_size=settings.eval_batch_size,
                                  device=device, evaluate_fn=evaluate_fn)
        if metrics is not None:
            record["val"] = metrics
        record["seconds"] = time.perf_counter() - t0
        st.history.append(record)
        st.epoch = epoch
        update_selection(st, model, score, settings)
        run.callback.on_epoch_end(epoch, record)
        if hooks.on_epoch_end is not None:
            hooks.on_epoch_end(st)
    return st


__all__ = ["TrainCallback", "TensorData", "LoopSettings", "FitHooks", "FitState", "fit", "predict", "unwrap",
           "steps_per_epoch", "epoch_order", "train_step", "LossWindow", "validate", "update_selection"]
