"""``train``: one complete run — build, (hash,) wrap, fit, select, test, collapse, save.

Example:
    >>> from mlet_compress.train import TrainConfig, train
    >>> result = train(TrainConfig(model="dlrm", dim=8, inner_dim=32), out="runs/demo")  # doctest: +SKIP
    >>> result.metrics["test"]["auc"] > 0.5                                           # doctest: +SKIP
    True
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional, Union

import numpy as np
import torch
from torch import nn

from ..data import DataSplits, load_dataset
from ..errors import ConfigError
from . import outputs as out_files
from .config import DataSpec, TrainConfig
from .ddp import DistInfo, barrier, resolve_device, setup, wrap_ddp
from .loop import FitState, TensorData, TrainCallback, fit, predict, steps_per_epoch
from .optim import build_optimizer, count_parameters, optimizer_supports_sparse

#: Largest preprocessor JSON embedded in the checkpoint metadata; bigger ones live in preprocessor.json only.
MAX_EMBEDDED_PREPROCESSOR_BYTES = 16 * 2**20

#: Config fields that must match between a run and its ``--resume``.
RESUME_KEYS = ("model", "dim", "inner_dim", "init_std", "hash_ratio", "hash_min_rows", "optimizer", "lr",
               "emb_lr_mult", "batch_size", "seed", "sparse_grads", "model_kwargs", "mlet_kwargs", "data")

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
    """The model to train: ``build_model`` from the data's vocabularies, then hashing and MLET wrapping.

    Args:
        cfg: a resolved :class:`TrainConfig`.
        splits: the ``DataSplits`` (vocab sizes, field names, number of dense features).
        sparse: create tables with sparse gradients.

    Returns:
        The freshly initialised model (on CPU). DLRM gets the paper's bottom MLP: 512-256-128-d on
        Criteo, 256-128-d on other data (``cfg.model_kwargs`` overrides).
    """
    from ..models import build_model

    pre = splits.preprocessor
    kwargs = dict(
        vocab_sizes=[int(v) for v in pre.vocab_sizes], num_dense=int(splits.train.dense.shape[1]),
        embed_dim=cfg.dim, field_names=list(pre.field_names), sparse=sparse,
    )
    if cfg.model == "dlrm" and cfg.data.format != "criteo" and kwargs["num_dense"] > 0:
        kwargs["bottom_mlp"] = [256, 128]  # paper §4: 256-128-d on Avazu, 512-256-128-d on Criteo (the default)
    kwargs.update(cfg.model_kwargs)
    return build_model(cfg.model, **kwargs)


def prepare_model(model: nn.Module, cfg: TrainConfig) -> nn.Module:
    """Apply the training-time stages to a freshly built model: modulo hashing, then MLET ``wrap``."""
    if cfg.hash_ratio:
        from .. import HashConfig, compress_

        compress_(model, HashConfig(ratio=cfg.hash_ratio, min_rows=cfg.hash_min_rows))
    if cfg.is_mlet:
        from .. import MLETConfig, wrap

        wrap(model, MLETConfig(inner_dim=cfg.inner_dim, init_std=float(cfg.init_std), **cfg.mlet_kwargs))
    return model


def model_info(model: nn.Module) -> Optional[dict[str, Any]]:
    """``{"name", "config"}`` that ``build_model`` rebuilds the (uncompressed) architecture from."""
    name, config = getattr(model, "name", None), getattr(model, "config", None)
    if not isinstance(name, str) or not name or not isinstance(config, dict):
        return None
    return {"name": name, "config": config}


def checkpoint_extra(cfg: TrainConfig, splits: Any, pre_dict: dict) -> dict[str, Any]:
    """Metadata stored in ``model.safetensors`` so ``eval`` can rebuild the test split and ids."""
    extra: dict[str, Any] = {
        "train_config": cfg.to_dict(),
        "data": cfg.data.to_dict(),
        "data_info": json.loads(json.dumps(splits.info, default=str)),
    }
    blob = json.dumps(pre_dict)
    if len(blob) <= MAX_EMBEDDED_PREPROCESSOR_BYTES:
        extra["preprocessor"] = pre_dict
    else:
        extra["preprocessor_file"] = out_files.PREPROCESSOR_FILE
    return extra


def _check_resume(saved: dict, cfg: TrainConfig) -> None:
    """Raise ConfigError when a :data:`RESUME_KEYS` field of ``cfg`` differs from the saved run's config."""
    saved = TrainConfig.from_dict(saved).to_dict()  # an older config.json: current field names and defaults
    now = cfg.to_dict()
    diff = [k for k in RESUME_KEYS if json.dumps(saved.get(k), sort_keys=True) != json.dumps(now.get(k), sort_keys=True)]
    if diff:
        raise ConfigError(
            f"--resume: option(s) {diff} differ from the saved run ({[saved.get(k) for k in diff]} saved); "
            "resume with the run's own config (only --epochs/--patience may change)"
        )


def _evaluate(labels: np.ndarray, probs: np.ndarray, log_freq: Optional[np.ndarray] = None) -> dict[str, Any]:
    from ..metrics import evaluate

    return evaluate(labels, probs, log_freq=log_freq) if log_freq is not None else evaluate(labels, probs)


def _core(m: dict[str, Any]) -> dict[str, Any]:
    return {k: m[k] for k in ("auc", "logloss", "pr_auc") if k in m}


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

    Works unchanged under ``torchrun`` (DDP; rank 0 writes, every rank returns the same result).

    Args:
        cfg: the run's :class:`TrainConfig` (``None`` fields take the paper's defaults for the model).
        splits: a ``DataSplits``; ``None`` loads ``cfg.data``.
        out: run directory (``None``: write nothing). Must be empty unless ``force`` or ``resume``.
        force: allow writing into a non-empty ``out``.
        resume: continue from ``out/state.pt`` (same config except ``epochs``/``patience``).
        callback: progress hooks (rank 0 only).
        build_fn: ``(cfg, splits, sparse) -> model`` to train a custom model instead of
            ``build_model(cfg.model, ...)``; it must map ``(dense, sparse)`` to logits.

    Returns:
        A :class:`TrainResult`.

    Raises:
        ConfigError: invalid options, non-empty ``out``, or a resume with a different config.
        NumericalError: the loss diverged, or the collapse equivalence check failed.
        DataError / CheckpointError: from the data loader or the resume state.
    """
    cfg = cfg.resolved()
    info = setup(cfg.device)
    device = resolve_device(cfg.device, info)
    out_dir = Path(out) if out is not None else None
    if resume and out_dir is None:
        raise ConfigError("resume=True needs out= (the run directory to continue)")
    if out_dir is not None and not resume:
        open_run_dir(out_dir, force, info)
    if splits is None:
        splits = load_data(cfg.data)
    torch.manual_seed(cfg.seed)
    np.random.seed(cfg.seed % 2**32)
    sparse = _sparse_grads(cfg, info, device)
    model = (build_fn or build_training_model)(cfg, splits, sparse)
    minfo = model_info(model)
    prepare_model(model, cfg)
    params_train = count_parameters(model)
    model.to(device)
    optimizer = build_optimizer(model, cfg.optimizer, float(cfg.lr), cfg.emb_lr_mult)
    state = _load_resume_state(out_dir, cfg, model, optimizer) if resume else None
    pre_dict = splits.preprocessor.to_dict()
    if out_dir is not None and info.is_main:
        out_files.write_json(out_dir / out_files.PREPROCESSOR_FILE, pre_dict)
        out_files.write_json(out_dir / out_files.CONFIG_FILE, {
            "train_config": cfg.to_dict(), "model_info": minfo, "data_info": splits.info,
            "world_size": info.world_size, "sparse_grads": sparse,
        })
    train_model, grad_hook = wrap_ddp(model, device, info) if info.distributed else (model, None)

    def save_epoch(st: FitState) -> None:
        if out_dir is not None and cfg.save_state and info.is_main:
            out_files.save_state(out_dir / out_files.STATE_FILE, model.state_dict(), optimizer.state_dict(), st,
                                 cfg.to_dict())

    cb = callback or TrainCallback()
    train_t, val_t = TensorData.from_tabular(splits.train), TensorData.from_tabular(splits.val)
    if info.is_main:
        cb.on_run_start(cfg.variant, steps_per_epoch(len(train_t), cfg.batch_size, info, cfg.max_steps_per_epoch) * cfg.epochs)
    t0 = time.perf_counter()
    st = fit(
        train_model, optimizer, train_t, val_t, epochs=cfg.epochs, batch_size=cfg.batch_size, seed=cfg.seed,
        select=cfg.select, patience=cfg.patience, device=device, evaluate_fn=_evaluate, info=info, state=state,
        max_steps_per_epoch=cfg.max_steps_per_epoch, eval_batch_size=cfg.eval_batch_size,
        log_every=cfg.log_every, callback=cb, on_epoch_end=save_epoch, after_backward=grad_hook,
    )
    if st.best_state is not None:
        model.load_state_dict(st.best_state, strict=True)
    model.eval()
    metrics, params_inf = _test_and_save(model, cfg, splits, st, device, out_dir if info.is_main else None, minfo,
                                         pre_dict)
    metrics["params"] = {
        "embedding_training": params_train["embedding"], "embedding_inference": params_inf["embedding"],
        "total_training": params_train["total"], "total_inference": params_inf["total"],
    }
    metrics.update(train_seconds=time.perf_counter() - t0, train_rows=len(train_t), world_size=info.world_size,
                   history=st.history)
    if out_dir is not None and info.is_main:
        out_files.write_json(out_dir / out_files.METRICS_FILE, metrics)
    barrier(info)
    if info.is_main:
        cb.on_run_end(cfg.variant, metrics)
    return TrainResult(cfg, metrics, model, out_dir, list(st.history))


def open_run_dir(out_dir: Path, force: bool, info: DistInfo) -> None:
    """Every rank checks ``out_dir`` (so a refusal stops all ranks, not only rank 0), then rank 0 creates it."""
    out_files.check_run_dir(out_dir, force=force)
    barrier(info)
    if info.is_main:
        out_files.prepare_run_dir(out_dir, force=force)


def _load_resume_state(out_dir: Path, cfg: TrainConfig, model: nn.Module, optimizer: torch.optim.Optimizer) -> FitState:
    """Restore model, optimizer and loop state from ``out_dir/state.pt`` (config must match)."""
    model_state, opt_state, state, saved_cfg = out_files.load_state(out_dir / out_files.STATE_FILE)
    _check_resume(saved_cfg, cfg)
    model.load_state_dict(model_state, strict=True)
    optimizer.load_state_dict(opt_state)
    if cfg.epochs > int(saved_cfg.get("epochs", 0)):
        state.stopped_early = False  # more epochs asked for: continue even after an early stop
    return state


def _test_and_save(model: nn.Module, cfg: TrainConfig, splits: Any, st: FitState, device: torch.device,
                   out_dir: Optional[Path], minfo: Optional[dict], pre_dict: dict) -> tuple[dict[str, Any], dict]:
    """Test metrics of the selected weights (uncollapsed), then collapse MLET and save the checkpoints.

    ``out_dir`` is None on non-main ranks (nothing written). Returns ``(metrics, inference parameter
    counts)``; the caller adds ``params`` and the run totals to the metrics.
    """
    from .. import save_checkpoint
    from ..data import sample_log_frequency

    test_t = TensorData.from_tabular(splits.test)
    log_freq = np.asarray(sample_log_frequency(splits.preprocessor, splits.test.sparse), dtype=np.float64)
    probs = predict(model, test_t, cfg.eval_batch_size, device)
    test_metrics = _evaluate(test_t.labels.numpy().astype(np.float64), probs, log_freq)
    extra = checkpoint_extra(cfg, splits, pre_dict)
    if out_dir is not None and cfg.keep_factors and cfg.is_mlet:
        save_checkpoint(model, out_dir / out_files.FACTORS_FILE, model_info=minfo, extra=extra)
    collapse_diff = None
    if cfg.is_mlet:
        from .. import collapse

        collapse(model, check=True)
        collapse_diff = float(np.max(np.abs(predict(model, test_t, cfg.eval_batch_size, device) - probs), initial=0.0))
    if out_dir is not None:
        save_checkpoint(model, out_dir / out_files.MODEL_FILE, model_info=minfo, extra=extra)
    selected = next((r for r in st.history if r["epoch"] == st.best_epoch), st.history[-1] if st.history else {})
    return {
        "variant": cfg.variant, "model": cfg.model, "dim": cfg.dim, "inner_dim": cfg.inner_dim,
        "emb_lr_mult": cfg.emb_lr_mult, "seed": cfg.seed,
        "test": _core(test_metrics),
        "set_a": dict(test_metrics.get("set_a", {})),
        "set_b": dict(test_metrics.get("set_b", {})),
        "val": dict(selected.get("val", {})),
        "selected_epoch": st.best_epoch, "epochs_run": st.epoch, "stopped_early": st.stopped_early,
        "select": cfg.select, "collapse_max_abs_prob_diff": collapse_diff,
    }, count_parameters(model)


__all__ = ["TrainResult", "train", "load_data", "build_training_model", "prepare_model", "model_info",
           "checkpoint_extra"]
