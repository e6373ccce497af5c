"""The epoch loop: seeded shuffling, optimizer steps, validation, epoch selection and early stopping.

Pure training mechanics; it knows nothing of files (the caller passes ``on_epoch_end`` to save state).
"""

from __future__ import annotations

import math
import time
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..errors import NumericalError
from .ddp import DistInfo, all_mean, per_rank_batch, shard_indices


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

    def on_run_end(self, name: str, metrics: dict[str, Any]) -> None:
        """The run finished; ``metrics`` is the content of ``metrics.json``."""


@dataclass
class TensorData:
    """A split held as torch tensors (CPU) for fast batch indexing."""

    dense: torch.Tensor
    sparse: torch.Tensor
    labels: torch.Tensor

    @classmethod
    def from_tabular(cls, data: Any) -> "TensorData":
        """Convert a ``TabularData`` (numpy arrays) without copying where possible."""
        dense = torch.from_numpy(np.ascontiguousarray(data.dense, dtype=np.float32))
        if dense.dim() == 1:
            dense = dense.reshape(len(data.labels), -1)
        sparse = torch.from_numpy(np.ascontiguousarray(data.sparse, dtype=np.int64))
        labels = torch.from_numpy(np.ascontiguousarray(data.labels, dtype=np.float32))
        return cls(dense, sparse, labels)

    def __len__(self) -> int:
        return int(self.labels.shape[0])


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


def unwrap(model: nn.Module) -> nn.Module:
    """The module inside a ``DistributedDataParallel`` wrapper (the model itself otherwise)."""
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


@torch.no_grad()
def predict(model: nn.Module, data: TensorData, batch_size: int, device: torch.device) -> np.ndarray:
    """Click probabilities (float64 numpy) of every row of ``data``, in order, in eval mode.

    Example:
        >>> # probs = predict(model, TensorData.from_tabular(splits.test), 4096, torch.device("cpu"))
    """
    m = unwrap(model)
    was_training = m.training
    m.eval()
    out = []
    try:
        for start in range(0, len(data), batch_size):
            sl = slice(start, start + batch_size)
            logits = m(data.dense[sl].to(device), data.sparse[sl].to(device))
            out.append(torch.sigmoid(logits.float()).reshape(-1).cpu().double())
    finally:
        m.train(was_training)
    if not out:
        return np.zeros(0, dtype=np.float64)
    return torch.cat(out).numpy()


def _score(metrics: dict[str, Any], select: str) -> float:
    """A higher-is-better score of the selection metric."""
    value = float(metrics[select])
    return value if select == "auc" else -value


def steps_per_epoch(n_rows: int, batch_size: int, info: DistInfo, max_steps: Optional[int]) -> int:
    """Number of optimizer steps of one epoch on each rank."""
    rows = -(-n_rows // info.world_size)
    steps = -(-rows // per_rank_batch(batch_size, info))
    return min(steps, max_steps) if max_steps else steps


def fit(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    train: TensorData,
    val: Optional[TensorData],
    *,
    epochs: int,
    batch_size: int,
    seed: int,
    select: str,
    patience: Optional[int],
    device: torch.device,
    evaluate_fn: Callable[[np.ndarray, np.ndarray], dict[str, Any]],
    info: DistInfo = DistInfo(),
    state: Optional[FitState] = None,
    max_steps_per_epoch: Optional[int] = None,
    eval_batch_size: int = 4096,
    log_every: int = 10,
    callback: Optional[TrainCallback] = None,
    on_epoch_end: Optional[Callable[[FitState], None]] = None,
    after_backward: Optional[Callable[[], None]] = None,
) -> FitState:
    """Train for up to ``epochs`` epochs, validating after each and keeping the best weights in memory.

    Each epoch's row order is ``torch.randperm`` from a generator seeded with ``(seed, epoch)``, so a
    resumed run sees the same order as an uninterrupted one. The loss is the mean binary cross-entropy
    plus ``model.reg_loss / batch`` when the model sets one during its training forward (the models sum
    their L2 term over the batch, matching DeepCTR-Torch's sum-reduced BCE).

    Args:
        model: the model (optionally DDP-wrapped), already on ``device``.
        optimizer: its optimizer.
        train / val: the splits as :class:`TensorData` (``val`` may be None or empty: then the last
            epoch is selected).
        epochs: maximum number of epochs (counted including those in ``state``).
        batch_size: global batch (split across DDP ranks).
        seed: shuffling seed.
        select: ``auc`` (higher is better) or ``logloss`` (lower is better).
        patience: stop after this many epochs without improvement (None: never).
        device: where batches go.
        evaluate_fn: ``(labels, probs) -> metrics dict`` for validation.
        info: DDP placement.
        state: a :class:`FitState` to continue from (``--resume``).
        max_steps_per_epoch: cap on steps per epoch.
        eval_batch_size / log_every / callback: inference batch, progress cadence, progress hooks.
        on_epoch_end: called with the state after each epoch (before early stopping), e.g. to save it.
        after_backward: called after each ``backward()`` (DDP: all-reduce of sparse tables DDP ignores).

    Returns:
        The final :class:`FitState`; ``best_state`` holds a CPU copy of the selected epoch's weights.

    Raises:
        NumericalError: the training loss became NaN/Inf.
    """
    st = state or FitState()
    inner = unwrap(model)
    local_bs = per_rank_batch(batch_size, info)
    n_steps = steps_per_epoch(len(train), batch_size, info, max_steps_per_epoch)
    cb = callback if (callback is not None and info.is_main) else TrainCallback()
    model.train()
    while st.epoch < epochs and not st.stopped_early:
        epoch = st.epoch + 1
        gen = torch.Generator().manual_seed(int(seed) * 1_000_003 + epoch)
        order = shard_indices(torch.randperm(len(train), generator=gen), info)
        t0 = time.perf_counter()
        loss_sum, window, window_t, window_rows = 0.0, [], time.perf_counter(), 0
        for i in range(n_steps):
            idx = order[i * local_bs : (i + 1) * local_bs]
            dense = train.dense[idx].to(device, non_blocking=True)
            sparse = train.sparse[idx].to(device, non_blocking=True)
            labels = train.labels[idx].to(device, non_blocking=True)
            logits = model(dense, sparse)
            loss = F.binary_cross_entropy_with_logits(logits.reshape(-1).float(), labels)
            reg = getattr(inner, "reg_loss", None)
            # models sum their L2 term over the batch (DeepCTR's sum-reduced BCE); scale it to the mean BCE
            total = loss + reg / labels.numel() if isinstance(reg, torch.Tensor) else loss
            optimizer.zero_grad(set_to_none=True)
            total.backward()
            if after_backward is not None:
                after_backward()
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", message="Sparse invariant checks")
                optimizer.step()
            st.step += 1
            window.append(loss.detach())  # read back only every log_every steps (no per-step device sync)
            window_rows += idx.numel() * info.world_size
            if (i + 1) % log_every == 0 or i + 1 == n_steps:
                mean = float(torch.stack(window).mean())
                if not math.isfinite(mean):
                    raise NumericalError(
                        f"training loss became {mean} at epoch {epoch} (steps {i + 2 - len(window)}-{i + 1}); "
                        "lower --lr or --init-std (MLET diverges when the projection init is too large)"
                    )
                loss_sum += mean * len(window)
                now = time.perf_counter()
                cb.on_step(st.step, mean, window_rows / max(now - window_t, 1e-9))
                window, window_t, window_rows = [], now, 0
        train_loss = all_mean(loss_sum / max(n_steps, 1), info)
        record: dict[str, Any] = {"epoch": epoch, "train_loss": train_loss, "steps": n_steps}
        score: Optional[float] = None
        if val is not None and len(val):
            probs = predict(model, val, eval_batch_size, device)
            vm = evaluate_fn(val.labels.numpy().astype(np.float64), probs)
            record["val"] = {k: vm[k] for k in ("auc", "logloss", "pr_auc") if k in vm}
            score = _score(vm, select)
            if not math.isfinite(score):  # single-class validation set: no ranking signal
                score = None
        record["seconds"] = time.perf_counter() - t0
        st.history.append(record)
        st.epoch = epoch
        improved = score is None or st.best_score is None or score > st.best_score
        if improved:
            st.best_score, st.best_epoch, st.bad_epochs = score, epoch, 0
            st.best_state = {k: v.detach().to("cpu", copy=True) for k, v in inner.state_dict().items()}
        else:
            st.bad_epochs += 1
            if patience is not None and st.bad_epochs >= patience and epoch < epochs:
                st.stopped_early = True
        cb.on_epoch_end(epoch, record)
        if on_epoch_end is not None:
            on_epoch_end(st)
    return st


__all__ = ["TrainCallback", "TensorData", "FitState", "fit", "predict", "unwrap", "steps_per_epoch"]
