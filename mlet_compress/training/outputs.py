"""Run-directory files: atomic JSON, the ``state.pt`` resume file, and the output-folder policy.

A run directory holds ``model.safetensors`` (inference-ready), optionally ``factors.safetensors``,
``metrics.json``, ``config.json``, ``preprocessor.json`` and ``state.pt``. An existing non-empty
directory is never overwritten unless asked (``force``); ``--resume`` writes into its own directory.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import json
import math
import os
from pathlib import Path
from typing import Any, Optional, Union

import torch

from ..atomic import atomic_path, atomic_write_bytes
from ..errors import CheckpointError, ConfigError
from .loop import FitState

PathLike = Union[str, os.PathLike]

MODEL_FILE = "model.safetensors"
FACTORS_FILE = "factors.safetensors"
METRICS_FILE = "metrics.json"
CONFIG_FILE = "config.json"
PREPROCESSOR_FILE = "preprocessor.json"
STATE_FILE = "state.pt"
COMPARE_FILE = "compare.json"
STATE_VERSION = 1


def default_run_dir(root: PathLike = "runs") -> Path:
    """``runs/<YYYYmmdd-HHMMSS>`` (with a ``-2``, ``-3`` ... suffix if that exists)."""
    base = Path(root) / _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    out, i = base, 2
    while out.exists():
        out = base.with_name(f"{base.name}-{i}")
        i += 1
    return out


def check_run_dir(path: PathLike, *, force: bool = False) -> Path:
    """Refuse a file, or an existing non-empty directory unless ``force`` (creates nothing).

    Raises:
        ConfigError: ``path`` is a file, or a non-empty directory without ``force``.
    """
    p = Path(path)
    if p.exists() and not p.is_dir():
        raise ConfigError(f"output path {str(p)!r} is a file; pass a directory as {{out}}", options={"out": ...})
    if p.is_dir() and any(p.iterdir()) and not force:
        raise ConfigError(
            f"output directory {str(p)!r} is not empty; pass {{force}} to overwrite it, choose another {{out}}, "
            "or {resume} it", options={"force": True, "out": ..., "resume": ...},
        )
    return p


def jsonable(obj: Any) -> Any:
    """``obj`` with dataclasses, numpy values, paths and non-finite floats made JSON-friendly."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return jsonable(dataclasses.asdict(obj))
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if hasattr(obj, "item") and callable(obj.item) and getattr(obj, "ndim", 1) == 0:
        return jsonable(obj.item())
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    return obj


def write_json(path: PathLike, obj: Any) -> None:
    """Atomically write ``obj`` (numpy scalars/arrays and dataclasses allowed) as indented JSON."""
    atomic_write_bytes(path, (json.dumps(jsonable(obj), indent=2, sort_keys=False) + "\n").encode())


def read_json(path: PathLike) -> Any:
    """Read a JSON file.

    Raises:
        CheckpointError: missing or malformed file.
    """
    try:
        return json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise CheckpointError(f"{str(path)!r} does not exist") from None
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{str(path)!r} is not valid JSON ({exc}); the run directory is damaged") from None


def save_state(path: PathLike, model_state: dict, optimizer_state: dict, fit_state: FitState, config: dict) -> None:
    """Atomically save the resume state (``torch.save`` of tensors, numbers and strings only).

    The best epoch's weights are stored only when they differ from the current ones.
    """
    payload = {
        "version": STATE_VERSION,
        "model": model_state,
        "optimizer": optimizer_state,
        "epoch": fit_state.epoch,
        "step": fit_state.step,
        "history": json.dumps(jsonable(fit_state.history)),
        "best_epoch": fit_state.best_epoch,
        "best_score": fit_state.best_score,
        "best_state": fit_state.best_state if fit_state.best_epoch != fit_state.epoch else None,
        "bad_epochs": fit_state.bad_epochs,
        "stopped_early": fit_state.stopped_early,
        "rng": torch.get_rng_state(),
        "config": json.dumps(config),
    }
    p = Path(path)
    with atomic_path(p, make_parents=True) as tmp:
        torch.save(payload, tmp)


def load_state(path: PathLike) -> tuple[dict, dict, FitState, dict]:
    """Load ``state.pt`` with ``torch.load(weights_only=True)``.

    Returns:
        ``(model_state, optimizer_state, fit_state, config_dict)``; ``fit_state.best_state`` is the
        current weights when the best epoch was the last one saved.

    Raises:
        CheckpointError: missing, unreadable or of another version.
    """
    p = Path(path)
    if not p.is_file():
        raise CheckpointError(f"{str(p)!r} not found; {{resume}} needs a run directory trained with state saving on",
                              options={"resume": ...})
    try:
        payload = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unpickling failure is a damaged file
        raise CheckpointError(f"cannot read resume state {str(p)!r}: {exc}") from None
    if not isinstance(payload, dict) or payload.get("version") != STATE_VERSION:
        raise CheckpointError(f"{str(p)!r} is not a version-{STATE_VERSION} mlet-compress state file")
    model_state = payload["model"]
    st = FitState(
        epoch=int(payload["epoch"]),
        step=int(payload["step"]),
        history=json.loads(payload["history"]),
        best_epoch=int(payload["best_epoch"]),
        best_score=payload["best_score"],
        best_state=payload["best_state"] if payload["best_state"] is not None else dict(model_state),
        bad_epochs=int(payload["bad_epochs"]),
        stopped_early=bool(payload["stopped_early"]),
    )
    torch.set_rng_state(payload["rng"])
    return model_state, payload["optimizer"], st, json.loads(payload["config"])


def find_run_file(checkpoint: PathLike, name: str) -> Optional[Path]:
    """``name`` next to ``checkpoint`` (a run-directory file), or None."""
    p = Path(checkpoint).parent / name
    return p if p.is_file() else None


__all__ = [
    "MODEL_FILE", "FACTORS_FILE", "METRICS_FILE", "CONFIG_FILE", "PREPROCESSOR_FILE", "STATE_FILE", "COMPARE_FILE",
    "default_run_dir", "check_run_dir", "jsonable", "write_json", "read_json", "atomic_write_bytes",
    "save_state", "load_state", "find_run_file",
]
