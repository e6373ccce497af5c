"""Run one cell: train it, compress its inference checkpoint with every stage chain, evaluate every file.

Each stage row is measured on the compressed checkpoint itself (written by
:func:`mlet_compress.compress_checkpoint`, reloaded, rebuilt into the model with ``load_model_state``) on
the same in-memory test split as the uncompressed row, so the rows of a cell differ only by the stage.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Optional

from .. import compress_checkpoint, load_checkpoint
from ..errors import ConfigError, NumericalError, TargetingError
from ..inspection import inspect_checkpoint
from ..training.evaluate import checkpoint_metrics
from ..training.outputs import MODEL_FILE
from ..training.run import train
from .cells import Cell
from .config import NO_STAGE, SweepConfig, parse_stage

#: The columns of ``results.json`` / ``results.csv``, in order.
ROW_KEYS = (
    "model", "variant", "role", "arm", "dim", "k", "emb_lr_mult", "hash_ratio", "seed", "best_on_val", "stage",
    "emb_bytes", "auc", "logloss", "logloss_cal", "temperature", "pr_auc", "set_a_pr_auc", "set_b_pr_auc",
    "set_a_auc", "set_b_auc", "val_auc", "val_logloss", "val_score", "selected_epoch", "epochs_run",
    "train_seconds", "eval_seconds", "error",
)


def compress_file(src: Path, config: Any, dst: Path) -> Path:
    """Apply one stage config to ``src`` and write ``dst`` (a seam the tests break on purpose)."""
    return compress_checkpoint(src, config, dst, force=True).output


def _metrics(path: Path, splits: Any, sweep: SweepConfig) -> dict[str, Any]:
    """The test metrics of the checkpoint at ``path`` and its embedding bytes."""
    res = checkpoint_metrics(load_checkpoint(path), splits.test, splits.preprocessor, device=sweep.device,
                             batch_size=sweep.eval_batch_size)
    cal = res["calibration"]
    return {
        "emb_bytes": inspect_checkpoint(path).totals["table_bytes"],
        "auc": res["test"].get("auc"),
        "logloss": cal["logloss_raw"] if cal else res["test"].get("logloss"),
        "logloss_cal": res["test"].get("logloss") if cal else None,
        "temperature": cal["temperature"] if cal else None,
        "pr_auc": res["test"].get("pr_auc"),
        "set_a_pr_auc": res["set_a"].get("pr_auc"), "set_b_pr_auc": res["set_b"].get("pr_auc"),
        "set_a_auc": res["set_a"].get("auc"), "set_b_auc": res["set_b"].get("auc"),
    }


def _stage_files(base: Path, stage: str, work: Path, made: dict[str, Path]) -> Path:
    """Apply the chain ``stage`` to ``base``, reusing files of chain prefixes already written."""
    tokens = stage.split("+")
    configs = parse_stage(stage)
    src = base
    for i, config in enumerate(configs):
        prefix = "+".join(tokens[: i + 1])
        if prefix not in made:
            made[prefix] = compress_file(src, config, work / f"stage{len(made)}.safetensors")
        src = made[prefix]
    return src


def run_cell(cell: Cell, sweep: SweepConfig, splits: Any, work: Path) -> list[dict[str, Any]]:
    """Train ``cell`` in ``work`` and return one row per stage (``none`` first), keys :data:`ROW_KEYS`.

    A stage the cell's tables refuse (e.g. ``svd:rank=8`` on d = 4) gives a row with ``error`` set and no
    metrics; the other stages are still measured. A cell whose training diverges (``NumericalError``) gives
    rows with ``error`` set and no validation score (it is never a tuned pick).

    Args:
        cell: the cell.
        sweep: the sweep's shared settings.
        splits: the ``DataSplits`` (loaded once per process).
        work: a scratch directory for the run and its compressed files (created; the caller removes it).

    Returns:
        The cell's rows (``best_on_val`` is filled in later, across the cells of its group).

    Raises:
        ConfigError / DataError: from training (a bad option or bad data stops the sweep).
    """
    cfg = cell.train_config(sweep)
    common: dict[str, Any] = {
        "model": cell.model, "variant": cell.variant, "role": cell.role, "arm": cell.arm, "dim": cell.dim,
        "k": cell.k, "emb_lr_mult": cell.emb_lr_mult, "hash_ratio": cell.hash_ratio, "seed": cell.seed,
        "best_on_val": None,
    }
    t0 = time.perf_counter()
    try:
        res = train(cfg, splits, out=work / "run", force=True)
    except NumericalError as exc:  # a diverging setting (e.g. a high lr multiplier) is a result, not a crash
        error = "training diverged: " + str(exc).splitlines()[0]
        return [{k: {**common, "stage": stage, "error": error, "train_seconds": time.perf_counter() - t0,
                     "eval_seconds": 0.0}.get(k) for k in ROW_KEYS} for stage in (NO_STAGE, *sweep.stages)]
    m = res.metrics
    val = m.get("val") or {}
    common.update(val_auc=val.get("auc"), val_logloss=val.get("logloss"), val_score=val.get(sweep.select),
                  selected_epoch=m["selected_epoch"], epochs_run=m["epochs_run"],
                  train_seconds=time.perf_counter() - t0)
    base = work / "run" / MODEL_FILE
    made: dict[str, Path] = {}
    rows = []
    for stage in (NO_STAGE, *sweep.stages):
        t1 = time.perf_counter()
        row: dict[str, Any] = {**common, "stage": stage, "error": None}
        try:
            path = base if stage == NO_STAGE else _stage_files(base, stage, work, made)
            row.update(_metrics(path, splits, sweep))
        except (ConfigError, TargetingError) as exc:
            row["error"] = str(exc).splitlines()[0]
        row["eval_seconds"] = time.perf_counter() - t1
        rows.append({k: row.get(k) for k in ROW_KEYS})
    return rows


def mark_tuned_picks(rows: list[dict[str, Any]], select: str) -> list[dict[str, Any]]:
    """Set ``best_on_val`` on every row: True for the cell with the best validation score of its group.

    A group is the cells that differ only in the lr multiplier (same model, arm, d, k, hash ratio, seed);
    ties keep the smaller multiplier. Rows without a validation score are never picked.

    Args:
        rows: result rows (several stages per cell).
        select: ``auc`` (higher is better) or ``logloss`` (lower is better).

    Returns:
        ``rows`` (changed in place).

    Example:
        >>> rows = [{"model": "m", "arm": "single", "dim": 4, "k": 0, "hash_ratio": None, "seed": 0,
        ...          "emb_lr_mult": m, "val_score": s} for m, s in ((1.0, 0.70), (4.0, 0.72))]
        >>> [r["best_on_val"] for r in mark_tuned_picks(rows, "auc")]
        [False, True]
    """
    sign = 1.0 if select == "auc" else -1.0
    best: dict[tuple, tuple[float, float]] = {}
    for r in rows:
        key = (r["model"], r["arm"], r["dim"], r["k"], r["hash_ratio"], r["seed"])
        if r["val_score"] is None:
            continue
        cand = (sign * r["val_score"], -r["emb_lr_mult"])
        if key not in best or cand > best[key]:
            best[key] = cand
    for r in rows:
        key = (r["model"], r["arm"], r["dim"], r["k"], r["hash_ratio"], r["seed"])
        r["best_on_val"] = key in best and r["val_score"] is not None and \
            (sign * r["val_score"], -r["emb_lr_mult"]) == best[key]
    return rows


def stage_row_error(rows: list[dict[str, Any]]) -> Optional[str]:
    """The first stage error of a cell's rows (None when every stage was measured)."""
    return next((r["error"] for r in rows if r.get("error")), None)


__all__ = ["ROW_KEYS", "run_cell", "compress_file", "mark_tuned_picks", "stage_row_error"]
