"""Continuing a run directory: the saved config, the config check, and the ``state.pt`` restore.

:func:`mlet_compress.training.run.resume_run` is the entry point (``mlet-compress train --resume``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Union

import torch
from torch import nn

from ..errors import ConfigError
from . import outputs as out_files
from . import staging
from .config import TrainConfig
from .loop import FitState

#: Config fields that must match between a run and its ``--resume``.
RESUME_KEYS = ("model", "dim", "inner_dim", "init_std", "hash_ratio", "hash_min_rows", "optimizer", "lr",
               "emb_lr_mult", "batch_size", "seed", "sparse_grads", "model_kwargs", "mlet_kwargs", "data")


def saved_config(run_dir: Union[str, Path]) -> TrainConfig:
    """The :class:`TrainConfig` a run directory was trained with (its ``config.json``; 0.1.0 keys accepted).

    An unfinished run (``<parent>/.<name>.incomplete/``, see :mod:`.staging`) is read there: its
    ``config.json``, or the config its ``INCOMPLETE.json`` marker recorded when it failed before writing one.

    Args:
        run_dir: a run directory written by ``train`` (finished or not).

    Returns:
        The saved (resolved) :class:`TrainConfig`.

    Raises:
        CheckpointError: ``config.json`` is missing or not JSON.
        ConfigError: it has no ``train_config`` (not a training run directory) or an invalid one.
    """
    run_dir = Path(run_dir)
    unfinished = staging.staging_dir(run_dir)
    marker = staging.read_marker(unfinished) if unfinished.is_dir() else {}
    if marker.get("kind") == "compare" or (not marker and (run_dir / out_files.COMPARE_FILE).is_file()):
        raise ConfigError(f"{run_dir} holds a comparison (one run per variant); continue it with "
                          "resume_compare (the CLI's train --resume does this)")
    where = unfinished if unfinished.is_dir() else run_dir
    if where == unfinished and not (where / out_files.CONFIG_FILE).is_file() and marker.get("train_config"):
        return TrainConfig.from_dict(marker["train_config"])
    saved = out_files.read_json(where / out_files.CONFIG_FILE)
    train_config = saved.get("train_config") if isinstance(saved, dict) else None
    if not train_config:
        raise ConfigError(
            f"{run_dir}/{out_files.CONFIG_FILE} has no train_config; is {run_dir} a training run directory?"
        )
    return TrainConfig.from_dict(train_config)


def check_resume(saved: dict, cfg: TrainConfig) -> None:
    """Check that ``cfg`` may continue the saved run (only ``epochs``/``patience`` and the like may differ).

    Args:
        saved: the saved run's ``TrainConfig.to_dict()`` (0.1.0 keys accepted).
        cfg: the resolved config of the continuation.

    Raises:
        ConfigError: a :data:`RESUME_KEYS` field differs (the message names them and the saved values).
    """
    saved = TrainConfig.from_dict(saved).to_dict()  # an older config.json: current field names and defaults
    now = cfg.to_dict()
    diff = [k for k in RESUME_KEYS if json.dumps(saved.get(k), sort_keys=True) != json.dumps(now.get(k), sort_keys=True)]
    if diff:
        raise ConfigError(
            f"{{resume}}: option(s) {diff} differ from the saved run ({[saved.get(k) for k in diff]} saved); "
            "resume with the run's own config (only {epochs} and {patience} may change)",
            options={"resume": ..., "epochs": ..., "patience": ...},
        )


def load_resume_state(out_dir: Path, cfg: TrainConfig, model: nn.Module, optimizer: torch.optim.Optimizer) -> FitState:
    """Restore model, optimizer and loop state from ``out_dir/state.pt`` (the config must match).

    Args:
        out_dir: the run directory.
        cfg: the resolved config of the continuation.
        model / optimizer: freshly built (same architecture and parameter groups); loaded in place.

    Returns:
        The saved :class:`FitState` (``stopped_early`` cleared when ``cfg.epochs`` exceeds the saved run's).

    Raises:
        CheckpointError: ``state.pt`` is missing or unreadable.
        ConfigError: ``cfg`` differs from the saved run in a :data:`RESUME_KEYS` field.
    """
    model_state, opt_state, state, saved_cfg = out_files.load_state(out_dir / out_files.STATE_FILE)
    check_resume(saved_cfg, cfg)
    model.load_state_dict(model_state, strict=True)
    optimizer.load_state_dict(opt_state)
    if cfg.epochs > int(saved_cfg.get("epochs", 0)):
        state.stopped_early = False  # more epochs asked for: continue even after an early stop
    return state


__all__ = ["RESUME_KEYS", "saved_config", "check_resume", "load_resume_state"]
