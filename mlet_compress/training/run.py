"""``train``: one complete run — build, (hash,) wrap, fit, select, test, collapse, save; ``resume_run``.

Example:
    >>> from mlet_compress.train import TrainConfig, train
    >>> result = train(TrainConfig(model="dlrm", dim=8, inner_dim=32), out="runs/demo")  # doctest: +SKIP
    >>> result.metrics["test"]["auc"] > 0.5                                              # doctest: +SKIP
    True
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional, Union

import numpy as np
import torch
from torch import nn

from .. import HashConfig, MLETConfig, compress_, wrap
from ..data import DataSpec, DataSplits, load_dataset
from ..errors import CheckpointError, ConfigError
from ..models import build_model
from . import outputs as out_files
from . import staging
from .config import TrainConfig
from .ddp import DistInfo, barrier, resolve_device, setup, wrap_ddp
# MAX_EMBEDDED_PREPROCESSOR_BYTES, checkpoint_extra and RESUME_KEYS are re-exported: 0.1.0 imported them from here
from .finalize import MAX_EMBEDDED_PREPROCESSOR_BYTES, checkpoint_extra, evaluate_and_save, model_info
from .loop import FitHooks, FitState, LoopSettings, TrainCallback, fit, steps_per_epoch
from .optim import build_optimizer, count_parameters, memory_bytes, optimizer_supports_sparse
from .predict import TensorData
from .resume import RESUME_KEYS, load_resume_state, saved_config

BuildFn = Callable[[TrainConfig, Any, bool], nn.Module]


@dataclass
class TrainResult:
    """What :func:`train` returns.

    Attributes:
        config: the resolved :class:`TrainConfig`.
        metrics: the content of ``metrics.json`` (``test``, ``set_a``, ``set_b``, ``val``, ``params``, ...).
        model: the inference model (MLET collapsed), in eval mode, on the training device.
        out_dir: the run directory, or None when nothing was written.
        history: one record per epoch (``train_loss``, ``val``, ``seconds``).
    """

    config: TrainConfig
    metrics: dict[str, Any]
    model: nn.Module
    out_dir: Optional[Path] = None
    history: list[dict[str, Any]] = field(default_factory=list)


def load_data(spec: DataSpec, progress: Optional[Callable[[str], None]] = None) -> DataSplits:
    """Load and split the data described by ``spec`` (:func:`mlet_compress.data.load_dataset`).

    Args:
        spec: the :class:`DataSpec`.
        progress: callback receiving one-line status messages.

    Returns:
        A ``DataSplits``.

    Raises:
        ConfigError / DataError: from ``load_dataset``.
    """
    return load_dataset(spec, progress=progress)


def _sparse_grads(cfg: TrainConfig, info: DistInfo, device: torch.device) -> bool:
    """Sparse table gradients when asked, supported by the optimizer, and not all-reduced by NCCL."""
    if not cfg.sparse_grads or not optimizer_supports_sparse(cfg.optimizer or ""):
        return False
    if info.distributed and info.backend == "nccl":
        return False  # NCCL has no sparse all-reduce: dense table gradients under DDP on GPU
    return True


def build_training_model(cfg: TrainConfig, splits: Any, sparse: bool) -> nn.Module:
    """The model to train: ``build_model`` from the data's vocabularies (before hashing and MLET wrapping).

    Args:
        cfg: a resolved :class:`TrainConfig`.
        splits: the ``DataSplits`` (vocab sizes, field names, number of dense features).
        sparse: create tables with sparse gradients.

    Returns:
        The freshly initialised model (on CPU). DLRM gets the paper's bottom MLP: 512-256-128-d on
        Criteo, 256-128-d on other data (``cfg.model_kwargs`` overrides).
    """
    return build_model(cfg.model, **model_kwargs(cfg, splits, sparse))


def model_kwargs(cfg: TrainConfig, splits: Any, sparse: bool) -> dict[str, Any]:
    """The constructor arguments :func:`build_training_model` passes (also the TorchRec engine's DLRM sizes)."""
    pre = splits.preprocessor
    kwargs: dict[str, Any] = dict(
        vocab_sizes=[int(v) for v in pre.vocab_sizes], num_dense=int(splits.train.dense.shape[1]),
        embed_dim=cfg.dim, field_names=list(pre.field_names), sparse=sparse,
    )
    if cfg.model == "dlrm" and cfg.data.format != "criteo" and kwargs["num_dense"] > 0:
        kwargs["bottom_mlp"] = [256, 128]  # paper §4: 256-128-d on Avazu, 512-256-128-d on Criteo (the default)
    kwargs.update(cfg.model_kwargs)
    return kwargs


def prepare_model(model: nn.Module, cfg: TrainConfig) -> nn.Module:
    """Apply the training-time stages to a freshly built model: modulo hashing, then MLET ``wrap``.

    Args:
        model: the model from :func:`build_training_model` (or a custom ``build_fn``).
        cfg: a resolved :class:`TrainConfig` (``hash_ratio``, ``inner_dim``, ``init_std``, ``mlet_kwargs``).

    Returns:
        The same model, changed in place.

    Raises:
        TargetingError: ``cfg.mlet_kwargs`` select no embedding table.
    """
    apply_train_stages(model, cfg)
    return model


def apply_train_stages(model: nn.Module, cfg: TrainConfig) -> Optional[dict[str, Any]]:
    """Apply the train-time stages in place (hashing, then the MLET wrap) and return what hashing did
    (``metrics.json``'s ``hashing``): :func:`prepare_model`'s work, with its report.

    Returns:
        None without ``cfg.hash_ratio``; else ``{"ratio", "min_rows", "hashed": {name: {"rows",
        "buckets"}}, "skipped": {name: reason}}``.

    Raises:
        TargetingError: ``cfg.mlet_kwargs`` select no table, or no table is large enough to hash (the
            message gives each table's reason).
    """
    hashing = None
    if cfg.hash_ratio:
        rep = compress_(model, HashConfig(ratio=cfg.hash_ratio, min_rows=cfg.hash_min_rows))
        hashing = {"ratio": cfg.hash_ratio, "min_rows": cfg.hash_min_rows,
                   "hashed": {n: {"rows": int(t["original_num_embeddings"]), "buckets": int(t["num_buckets"])}
                              for n, t in rep.items()},
                   "skipped": dict(rep.skipped)}
    if cfg.is_mlet:
        wrap(model, MLETConfig(inner_dim=cfg.inner_dim, init_std=float(cfg.init_std), **cfg.mlet_kwargs))
    return hashing


@dataclass
class _Job:
    """The model of one run, before training: built from the seed, staged, on its device, with its optimizer."""

    model: nn.Module
    optimizer: torch.optim.Optimizer
    minfo: Optional[dict[str, Any]]
    params_train: dict[str, int]
    sparse: bool
    hashing: Optional[dict[str, Any]] = None


def _build_job(cfg: TrainConfig, splits: DataSplits, info: DistInfo, device: torch.device,
               build_fn: Optional[BuildFn]) -> _Job:
    """Seed, build, hash/wrap, count, move and attach the optimizer (this order fixes every random draw)."""
    torch.manual_seed(cfg.seed)
    np.random.seed(cfg.seed % 2**32)
    sparse = _sparse_grads(cfg, info, device)
    model = (build_fn or build_training_model)(cfg, splits, sparse)
    minfo = model_info(model)
    hashing = apply_train_stages(model, cfg)
    params_train = count_parameters(model)
    model.to(device)
    optimizer = build_optimizer(model, cfg.optimizer, float(cfg.lr), cfg.emb_lr_mult)
    return _Job(model, optimizer, minfo, params_train, sparse, hashing)


def _fit(job: _Job, cfg: TrainConfig, splits: DataSplits, info: DistInfo, device: torch.device,
         state: Optional[FitState], callback: TrainCallback, out_dir: Optional[Path],
         marker_dir: Optional[Path] = None) -> FitState:
    """DDP-wrap (when distributed) and run the epoch loop; rank 0 saves ``state.pt`` after each epoch (and
    notes the epochs saved in the staging marker under ``marker_dir``)."""
    train_model, grad_hook = wrap_ddp(job.model, device, info) if info.distributed else (job.model, None)

    def save_epoch(st: FitState) -> None:
        if out_dir is not None and cfg.save_state and info.is_main:
            out_files.save_state(out_dir / out_files.STATE_FILE, job.model.state_dict(), job.optimizer.state_dict(),
                                 st, cfg.to_dict())
            if marker_dir is not None:
                staging.write_marker(marker_dir, {}, epochs_done=st.epoch, epochs=cfg.epochs)

    train_t, val_t = TensorData.from_tabular(splits.train), TensorData.from_tabular(splits.val)
    if info.is_main:
        steps = steps_per_epoch(len(train_t), cfg.batch_size, info, cfg.max_steps_per_epoch)
        callback.on_run_start(cfg.variant, steps * cfg.epochs)
    hooks = FitHooks(callback=callback, on_epoch_end=save_epoch, after_backward=grad_hook)
    return fit(train_model, job.optimizer, train_t, val_t, LoopSettings.from_config(cfg), device=device, info=info,
               state=state, hooks=hooks)


def _write_run_config(out_dir: Path, cfg: TrainConfig, job: _Job, splits: DataSplits, info: DistInfo,
                      pre_dict: dict) -> None:
    """``preprocessor.json`` and ``config.json`` (what ``--resume`` and ``eval`` rebuild the run from)."""
    out_files.write_json(out_dir / out_files.PREPROCESSOR_FILE, pre_dict)
    out_files.write_json(out_dir / out_files.CONFIG_FILE, {
        "train_config": cfg.to_dict(), "model_info": job.minfo, "data_info": splits.info,
        "world_size": info.world_size, "sparse_grads": job.sparse,
    })


def _add_run_totals(metrics: dict[str, Any], params_train: dict[str, int], params_inf: dict[str, int],
                    mem_train: dict[str, int], mem_inf: dict[str, int], st: FitState, seconds: float, train_rows: int,
                    info: DistInfo) -> None:
    """Add ``params`` (training vs inference counts), ``memory_bytes`` (embedding parameters and their optimizer
    state while training, per rank, vs the inference tables; :func:`~.optim.memory_bytes`) and the run totals."""
    metrics["params"] = {
        "embedding_training": params_train["embedding"], "embedding_inference": params_inf["embedding"],
        "total_training": params_train["total"], "total_inference": params_inf["total"],
    }
    metrics["memory_bytes"] = {
        "embedding_params_training": mem_train["embedding_params"],
        "embedding_optimizer_state": mem_train["embedding_optimizer_state"],
        "embedding_training": mem_train["embedding_params"] + mem_train["embedding_optimizer_state"],
        "embedding_inference": mem_inf["embedding_params"],
    }
    metrics.update(train_seconds=seconds, train_rows=train_rows, world_size=info.world_size, history=st.history)


def train(
    cfg: TrainConfig,
    splits: Any = None,
    *,
    out: Union[str, Path, None] = None,
    force: bool = False,
    resume: bool = False,
    callback: Optional[TrainCallback] = None,
    build_fn: Optional[BuildFn] = None,
) -> TrainResult:
    """Train one model, select its best validation epoch, test it, collapse MLET and save the run.

    Works unchanged under ``torchrun`` (DDP; rank 0 writes, every rank returns the same result). The run
    directory is written as ``<parent>/.<name>.incomplete/`` and renamed to ``out`` when the run is complete,
    so a failed or killed run never leaves a half-written ``out`` (see :mod:`.staging`).

    Args:
        cfg: the run's :class:`TrainConfig` (``None`` fields take the paper's defaults for the model).
        splits: a ``DataSplits``; ``None`` loads ``cfg.data``.
        out: run directory (``None``: write nothing). Must be empty unless ``force`` or ``resume``.
        force: allow writing into a non-empty ``out`` (its run files are replaced) and discard an
            unfinished run into ``out``.
        resume: continue the run in ``out`` (finished, or unfinished after a failure) from its ``state.pt``
            (the last finished epoch; same config except ``epochs``/``patience``), or, when the run was
            interrupted before an epoch finished, train it again from the start. See :func:`resume_run`
            to continue from the run directory alone.
        callback: progress hooks (rank 0 only).
        build_fn: ``(cfg, splits, sparse) -> model`` to train a custom model instead of
            ``build_model(cfg.model, ...)``; it must map ``(dense, sparse)`` to logits.

    Returns:
        A :class:`TrainResult`.

    Raises:
        ConfigError: invalid options, non-empty ``out``, an unfinished run into ``out`` (without ``force``
            or ``resume``), or a resume with a different config.
        NumericalError: the loss diverged, or the collapse equivalence check failed.
        DataError / CheckpointError: from the data loader or the resume state.
    """
    cfg = cfg.resolved()
    if cfg.engine == "torchrec":  # refuse what the engine cannot run (and a missing torchrec) before any output
        # late import: the TorchRec engine imports torchrec, which `import mlet_compress` must not
        from .torchrec_run import check_config

        check_config(cfg)
    info = setup(cfg.device)
    out_dir = Path(out) if out is not None else None
    if resume and out_dir is None:
        raise ConfigError("resume=True needs out= (the run directory to continue)")
    if resume and cfg.engine == "torchrec":
        raise ConfigError("a TorchRec-engine run cannot be resumed (it saves no state.pt); train it again with {force}",
                          option="force")
    stage = None
    if out_dir is not None:
        marker = {"kind": "run", "train_config": cfg.to_dict()}
        if resume:
            _check_resumable(out_dir)
            stage = staging.open_resume(out_dir, info, marker)
        else:
            stage = staging.open_new_run(out_dir, force, info, marker)
    try:
        result = train_in(cfg, splits, stage.work if stage else None, info, resume=resume, callback=callback,
                          build_fn=build_fn, marker_dir=stage.work if stage else None)
    except BaseException as exc:
        staging.record_failure(stage, info, exc)
        raise
    staging.commit(stage, info)
    result.out_dir = out_dir
    return result


def _check_resumable(out_dir: Path) -> None:
    """A finished run can only be resumed from its ``state.pt`` (an unfinished one restarts without it)."""
    if not staging.staging_dir(out_dir).is_dir() and out_dir.is_dir() and not (out_dir / out_files.STATE_FILE).is_file():
        raise CheckpointError(f"{str(out_dir / out_files.STATE_FILE)!r} not found: the run finished without saving "
                              "its state (save_state=False), so it cannot be continued; train it again with {force}",
                              options={"force": True})


def train_in(cfg: TrainConfig, splits: Any, work_dir: Optional[Path], info: DistInfo, *, resume: bool = False,
             callback: Optional[TrainCallback] = None, build_fn: Optional[BuildFn] = None,
             marker_dir: Optional[Path] = None) -> TrainResult:
    """One run written straight into ``work_dir`` (created by rank 0; no staging): what :func:`train` and
    :func:`~mlet_compress.training.compare.compare` run inside their staging directories.

    Args:
        cfg: a resolved :class:`TrainConfig`. splits: a ``DataSplits`` or None (load ``cfg.data``).
        work_dir: where the files go (None: nothing written). info: DDP placement.
        resume: continue from ``work_dir/state.pt`` when it exists (else train from the start).
        callback / build_fn: as :func:`train`. marker_dir: staging directory whose marker notes the epochs saved.

    Returns:
        The :class:`TrainResult` (``out_dir`` is ``work_dir``).
    """
    if cfg.engine == "torchrec":
        if build_fn is not None:
            raise ConfigError("build_fn trains a custom model with the torch engine; drop it or use {engine}",
                              option="engine", value="torch")
        # late import: the TorchRec engine imports torchrec, which `import mlet_compress` must not
        from .torchrec_run import train_in_torchrec

        return train_in_torchrec(cfg, splits, work_dir, info, callback=callback)
    device = resolve_device(cfg.device, info)
    if work_dir is not None and info.is_main:
        work_dir.mkdir(parents=True, exist_ok=True)
    splits = load_data(cfg.data) if splits is None else splits
    job = _build_job(cfg, splits, info, device, build_fn)
    has_state = work_dir is not None and (work_dir / out_files.STATE_FILE).is_file()
    state = load_resume_state(work_dir, cfg, job.model, job.optimizer) if resume and has_state else None
    pre_dict = splits.preprocessor.to_dict()
    main_dir = work_dir if info.is_main else None  # only rank 0 writes
    if main_dir is not None:
        _write_run_config(main_dir, cfg, job, splits, info, pre_dict)
    cb = callback or TrainCallback()
    t0 = time.perf_counter()
    st = _fit(job, cfg, splits, info, device, state, cb, work_dir, marker_dir)
    if st.best_state is not None:
        job.model.load_state_dict(st.best_state, strict=True)
    job.model.eval()
    mem_train = memory_bytes(job.model, job.optimizer)  # before collapse: the factors and their optimizer state
    metrics, params_inf = evaluate_and_save(job.model, cfg, splits, st, device, main_dir, job.minfo, pre_dict)
    _add_run_totals(metrics, job.params_train, params_inf, mem_train, memory_bytes(job.model), st,
                    time.perf_counter() - t0, len(splits.train), info)
    if job.hashing is not None:
        metrics["hashing"] = job.hashing
    if main_dir is not None:
        out_files.write_json(main_dir / out_files.METRICS_FILE, metrics)
    barrier(info)
    if info.is_main:
        cb.on_run_end(cfg.variant, metrics)
    return TrainResult(cfg, metrics, job.model, work_dir, list(st.history))


def resume_run(
    run_dir: Union[str, Path],
    *,
    epochs: Optional[int] = None,
    patience: Optional[int] = None,
    callback: Optional[TrainCallback] = None,
) -> TrainResult:
    """Continue a run directory from its ``state.pt`` with the config saved in its ``config.json``.

    Args:
        run_dir: a run directory written by :func:`train` with ``save_state=True`` (also one of 0.1.0).
        epochs: the new maximum number of epochs (None: the saved one). More epochs than the saved run
            asked for continue it even after an early stop.
        patience: the new early-stopping patience (None: the saved one).
        callback: progress hooks (rank 0 only).

    Returns:
        The :class:`TrainResult` of the continued run (its files in ``run_dir`` are updated).

    Raises:
        CheckpointError: ``config.json`` or ``state.pt`` missing or unreadable.
        ConfigError: ``run_dir`` is not a training run directory, or ``epochs``/``patience`` are invalid.

    Example:
        >>> resume_run("runs/demo", epochs=5).metrics["epochs_run"]  # doctest: +SKIP
        5
    """
    cfg = saved_config(run_dir)
    cfg = dataclasses.replace(cfg, epochs=epochs if epochs is not None else cfg.epochs,
                              patience=patience if patience is not None else cfg.patience)
    return train(cfg, out=run_dir, resume=True, callback=callback)


__all__ = ["TrainResult", "train", "train_in", "resume_run", "load_data", "build_training_model", "model_kwargs",
           "prepare_model", "model_info", "checkpoint_extra", "MAX_EMBEDDED_PREPROCESSOR_BYTES", "RESUME_KEYS"]
