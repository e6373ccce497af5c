"""``evaluate_checkpoint``: test metrics of any saved checkpoint on its training run's own test split.

The checkpoint's metadata (or the run directory's ``config.json`` / ``preprocessor.json`` beside it)
carries the model name and constructor config, the vocabularies, the preprocessing options and the
split seed, so ``eval`` on the raw data file rebuilds exactly the training run's test split and ids.
Plain, collapsed, SVD, quantized and hashed checkpoints load through ``load_model_state``, which puts
the matching lookup module in place of each compressed table.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional, Union

import numpy as np
import torch
from torch import nn

from .. import load_checkpoint, load_model_state
from ..checkpoint import Checkpoint
from ..data import DataSpec, Preprocessor, TabularData, load_eval_split, sample_log_frequency
from ..errors import CheckpointError
from ..metrics import evaluate, log_loss
from ..models import build_model
from . import outputs as out_files
from .calibration import predict_logits, scaled_probs
from .ddp import DistInfo, resolve_device
from .predict import TensorData, predict


def _run_meta(path: Path, ckpt: Any) -> tuple[dict, dict, dict, dict]:
    """``(model_info, data_spec, data_info, preprocessor)`` from the checkpoint or its run directory."""
    extra = dict(ckpt.extra or {})
    config_file = out_files.find_run_file(path, out_files.CONFIG_FILE)
    run_cfg = out_files.read_json(config_file) if config_file else {}
    minfo = ckpt.model_info or run_cfg.get("model_info")
    if not minfo or "name" not in minfo or "config" not in minfo:
        raise CheckpointError(
            f"{str(path)!r} carries no model name/config (metadata 'model'); eval can only rebuild checkpoints "
            "saved by `mlet-compress train` (or a command that keeps their metadata), or with config.json beside it"
        )
    spec = extra.get("data") or (run_cfg.get("train_config") or {}).get("data")
    pre = extra.get("preprocessor")
    if pre is None:
        pre_file = out_files.find_run_file(path, out_files.PREPROCESSOR_FILE)
        pre = out_files.read_json(pre_file) if pre_file else None
    if spec is None or pre is None:
        raise CheckpointError(
            f"{str(path)!r} has no data/preprocessor metadata and no config.json + preprocessor.json beside it; "
            "keep the checkpoint in its training run directory or use one saved by `mlet-compress train`"
        )
    info = extra.get("data_info") or run_cfg.get("data_info") or {}
    return minfo, spec, info, pre


def _with_overrides(spec_d: dict, *, data: Optional[str], format: Optional[str],
                    test_data: Optional[str]) -> DataSpec:
    """The run's :class:`DataSpec` with the ``eval`` command's data path / format / test file, where given."""
    spec_d = dict(spec_d)
    if data is not None:
        spec_d["path"] = str(data)
    if format is not None:
        spec_d["format"] = format
    if test_data is not None:
        spec_d["test_data"] = str(test_data)
    return DataSpec.from_dict(spec_d)


def _test_metrics(model: nn.Module, test: TabularData, pre: Preprocessor, batch_size: int,
                  device: torch.device, temperature: Optional[float] = None) -> dict[str, Any]:
    """``metrics.evaluate`` of the model's predictions on ``test``, with the frequency sets A / B.

    With a ``temperature`` the probabilities are ``sigmoid(logit / T)`` (float64) and the result also holds
    ``logloss_raw``, the LogLoss of ``sigmoid(logit)``.
    """
    tensors = TensorData.from_tabular(test)
    log_freq = np.asarray(sample_log_frequency(pre, test.sparse), dtype=np.float64)
    labels = tensors.labels.numpy().astype(np.float64)
    if temperature is None:
        return evaluate(labels, predict(model, tensors, batch_size, device), log_freq=log_freq)
    z = predict_logits(model, tensors, batch_size, device)
    m = evaluate(labels, scaled_probs(z, temperature), log_freq=log_freq)
    m["logloss_raw"] = log_loss(labels, scaled_probs(z, 1.0))
    return m


def checkpoint_metrics(
    ckpt: Checkpoint,
    test: TabularData,
    pre: Union[Preprocessor, dict],
    *,
    device: str = "auto",
    batch_size: int = 4096,
    model_info: Optional[dict] = None,
) -> dict[str, Any]:
    """Test metrics of a loaded checkpoint on a test split already in memory (what ``evaluate_checkpoint`` runs).

    The model is rebuilt from the checkpoint's model name/config, its tables put in place by
    ``load_model_state`` (plain, collapsed, low-rank, quantized or hashed), and a temperature stored at
    training time (``extra["calibration"]``) is applied to the logits.

    Args:
        ckpt: a loaded :class:`~mlet_compress.checkpoint.Checkpoint`.
        test: the test split, encoded with the run's vocabularies (``DataSplits.test``).
        pre: the run's ``Preprocessor`` (or its dict), for the Set A / Set B frequencies.
        device: ``auto``, ``cpu`` or ``cuda[:N]``.
        batch_size: inference batch.
        model_info: ``{"name", "config"}`` when the checkpoint carries none.

    Returns:
        ``{"test": {auc, logloss, pr_auc}, "set_a", "set_b", "calibration": {temperature, logloss_raw} | None,
        "tables": {kind: count}}``; with a temperature, every LogLoss is the calibrated one.

    Raises:
        CheckpointError: no model name/config to rebuild the model from.
    """
    minfo = model_info or ckpt.model_info
    if not minfo or "name" not in minfo or "config" not in minfo:
        raise CheckpointError("the checkpoint carries no model name/config (metadata 'model'); cannot rebuild it")
    model = build_model(minfo["name"], **minfo["config"])
    load_model_state(model, ckpt)
    dev = resolve_device(device, DistInfo())
    model.to(dev).eval()
    temperature = (ckpt.extra or {}).get("calibration", {}).get("temperature")
    pre_obj = pre if isinstance(pre, Preprocessor) else Preprocessor.from_dict(pre)
    m = _test_metrics(model, test, pre_obj, batch_size, dev, temperature)
    kinds: dict[str, int] = {}
    for ent in ckpt.tables.values():
        kind = ent.kind + ("+hashed" if ent.hash else "")
        kinds[kind] = kinds.get(kind, 0) + 1
    return {
        "test": {k: m[k] for k in ("auc", "logloss", "pr_auc") if k in m},
        "set_a": dict(m.get("set_a", {})),
        "set_b": dict(m.get("set_b", {})),
        "calibration": None if temperature is None else {"temperature": float(temperature),
                                                         "logloss_raw": m["logloss_raw"]},
        "tables": kinds,
    }


def evaluate_checkpoint(
    checkpoint: Union[str, Path],
    *,
    data: Optional[str] = None,
    format: Optional[str] = None,
    test_data: Optional[str] = None,
    device: str = "auto",
    batch_size: int = 4096,
) -> dict[str, Any]:
    """Evaluate a checkpoint on its training run's test split.

    Args:
        checkpoint: a ``.safetensors`` checkpoint (plain, collapsed, low-rank, quantized or hashed).
        data: the raw data path (default: the path recorded at training time).
        format: its format (default: the recorded one).
        test_data: a separate test file (default: the recorded one, if any).
        device: ``auto``, ``cpu`` or ``cuda[:N]``.
        batch_size: inference batch.

    Returns:
        ``{"checkpoint", "model", "rows", "test": {auc, logloss, pr_auc}, "set_a": {...}, "set_b": {...},
        "calibration", "tables": {kind: count}}`` (:func:`checkpoint_metrics`; a checkpoint trained with
        ``calibrate=True`` has its temperature applied, ``calibration["logloss_raw"]`` is the LogLoss without it).

    Raises:
        CheckpointError: unreadable checkpoint or missing run metadata.
        DataError: the data file does not match the saved preprocessing.

    Example:
        >>> evaluate_checkpoint("runs/demo/model.safetensors")["test"]["auc"]  # doctest: +SKIP
        0.73
    """
    path = Path(checkpoint)
    ckpt = load_checkpoint(path)
    minfo, spec_d, info, pre = _run_meta(path, ckpt)
    spec = _with_overrides(spec_d, data=data, format=format, test_data=test_data)
    test = load_eval_split(spec, pre, info)
    res = checkpoint_metrics(ckpt, test, pre, device=device, batch_size=batch_size, model_info=minfo)
    return {"checkpoint": str(path), "model": minfo["name"], "rows": len(test), **res}


__all__ = ["evaluate_checkpoint", "checkpoint_metrics"]
