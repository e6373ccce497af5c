"""After the epochs: test the selected weights, collapse MLET, save the checkpoints, assemble the metrics.

``metrics.json`` is the returned dict plus the run totals :func:`mlet_compress.training.run.train` adds.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch
from torch import nn

from .. import collapse, save_checkpoint
from ..data import DataSplits, sample_log_frequency
from ..metrics import evaluate, log_loss
from . import outputs as out_files
from .calibration import calibrate, predict_logits, scaled_probs
from .config import TrainConfig
from .loop import FitState
from .optim import count_parameters
from .predict import TensorData, predict

#: Largest preprocessor JSON embedded in the checkpoint metadata; bigger ones live in preprocessor.json only.
MAX_EMBEDDED_PREPROCESSOR_BYTES = 16 * 2**20


def model_info(model: nn.Module) -> Optional[dict[str, Any]]:
    """``{"name", "config"}`` that ``build_model`` rebuilds the (uncompressed) architecture from."""
    name, config = getattr(model, "name", None), getattr(model, "config", None)
    if not isinstance(name, str) or not name or not isinstance(config, dict):
        return None
    return {"name": name, "config": config}


def checkpoint_extra(cfg: TrainConfig, splits: DataSplits, pre_dict: dict) -> dict[str, Any]:
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


def _core(m: dict[str, Any]) -> dict[str, Any]:
    return {k: m[k] for k in ("auc", "logloss", "pr_auc") if k in m}


def _calibration(model: nn.Module, cfg: TrainConfig, splits: DataSplits, test_t: TensorData,
                 device: torch.device) -> dict[str, float]:
    """The validation-fitted temperature, plus the test LogLoss before and after applying it."""
    cal = calibrate(model, TensorData.from_tabular(splits.val), cfg.eval_batch_size, device)
    z = predict_logits(model, test_t, cfg.eval_batch_size, device)
    y = test_t.labels.numpy().astype(np.float64)
    return {**cal, "test_logloss_raw": log_loss(y, scaled_probs(z, 1.0)),
            "test_logloss": log_loss(y, scaled_probs(z, cal["temperature"]))}


def test_metrics(model: nn.Module, cfg: TrainConfig, splits: DataSplits,
                 device: torch.device) -> tuple[dict[str, Any], np.ndarray, TensorData]:
    """``metrics.evaluate`` of ``model`` on the test split (with the Set A / Set B frequency sets).

    Returns:
        ``(metrics, probabilities, test tensors)``.
    """
    test_t = TensorData.from_tabular(splits.test)
    log_freq = np.asarray(sample_log_frequency(splits.preprocessor, splits.test.sparse), dtype=np.float64)
    probs = predict(model, test_t, cfg.eval_batch_size, device)
    return evaluate(test_t.labels.numpy().astype(np.float64), probs, log_freq=log_freq), probs, test_t


def calibration_of(model: nn.Module, cfg: TrainConfig, splits: DataSplits, test_t: TensorData,
                   device: torch.device) -> dict[str, float]:
    """The validation-fitted temperature and the test LogLoss before and after it (``--calibrate``)."""
    return _calibration(model, cfg, splits, test_t, device)


def run_metrics(cfg: TrainConfig, st: FitState, tm: dict[str, Any], collapse_diff: Optional[float],
                cal: Optional[dict[str, float]]) -> dict[str, Any]:
    """The ``metrics.json`` core of a run (before ``params`` and the run totals)."""
    selected = next((r for r in st.history if r["epoch"] == st.best_epoch), st.history[-1] if st.history else {})
    return {
        "variant": cfg.variant, "model": cfg.model, "dim": cfg.dim, "inner_dim": cfg.inner_dim,
        "emb_lr_mult": cfg.emb_lr_mult, "seed": cfg.seed,
        "test": _core(tm),
        "set_a": dict(tm.get("set_a", {})),
        "set_b": dict(tm.get("set_b", {})),
        "val": dict(selected.get("val", {})),
        "selected_epoch": st.best_epoch, "epochs_run": st.epoch, "stopped_early": st.stopped_early,
        "select": cfg.select, "collapse_max_abs_prob_diff": collapse_diff, "calibration": cal,
    }


def evaluate_and_save(model: nn.Module, cfg: TrainConfig, splits: DataSplits, st: FitState, device: torch.device,
                  out_dir: Optional[Path], minfo: Optional[dict], pre_dict: dict) -> tuple[dict[str, Any], dict]:
    """Test metrics of the selected weights (uncollapsed), then collapse MLET and save the checkpoints.

    Args:
        model: the trained model with the selected weights loaded, in eval mode.
        cfg / splits / st: the run's config, data and final loop state.
        device: where inference runs.
        out_dir: the run directory; None on non-main ranks or without outputs (nothing written).
        minfo / pre_dict: :func:`model_info` and the preprocessor dict saved with the checkpoints.

    Returns:
        ``(metrics, inference parameter counts)``; the caller adds ``params`` and the run totals. With
        ``cfg.calibrate``, ``metrics["calibration"]`` holds the temperature and the validation/test LogLoss
        before and after it (``test`` stays the model's own, uncalibrated output).

    Raises:
        NumericalError: the collapse equivalence check failed.
    """
    tm, probs, test_t = test_metrics(model, cfg, splits, device)
    extra = checkpoint_extra(cfg, splits, pre_dict)
    cal = _calibration(model, cfg, splits, test_t, device) if cfg.calibrate else None
    if cal is not None:
        extra["calibration"] = {k: cal[k] for k in ("temperature", "val_logloss_raw", "val_logloss")}
    if out_dir is not None and cfg.keep_factors and cfg.is_mlet:
        save_checkpoint(model, out_dir / out_files.FACTORS_FILE, model_info=minfo, extra=extra)
    collapse_diff = None
    if cfg.is_mlet:
        collapse(model, check=True)
        collapse_diff = float(np.max(np.abs(predict(model, test_t, cfg.eval_batch_size, device) - probs), initial=0.0))
    if out_dir is not None:
        save_checkpoint(model, out_dir / out_files.MODEL_FILE, model_info=minfo, extra=extra)
    return run_metrics(cfg, st, tm, collapse_diff, cal), count_parameters(model)


__all__ = ["MAX_EMBEDDED_PREPROCESSOR_BYTES", "model_info", "checkpoint_extra", "evaluate_and_save", "test_metrics",
           "calibration_of", "run_metrics"]
