"""``compare``: single-layer vs MLET on the same data and seed (plus tuned-lr single-layer baselines).

The paper's baseline is a single-layer model at the paper's fixed learning rate. An independent check
found that raising only the embedding tables' learning rate recovers much of MLET's gain, so with
``emb_lr_mults`` the comparison also trains single-layer models with those embedding-lr multipliers
and reports MLET against the *best of them on validation*, beside the paper's fixed-lr baseline.

Example (``compare`` trains four models on the synthetic default, so only the variant list is run here):
    >>> from mlet_compress.train import TrainConfig, compare, compare_variants
    >>> cfg = TrainConfig(model="dlrm", dim=16, inner_dim=64)
    >>> [(c.variant, role) for c, role in compare_variants(cfg, emb_lr_mults=[1, 4, 10])]
    [('single d=16', 'baseline'), ('single d=16 emb-lr×4', 'tuned'), ('single d=16 emb-lr×10', 'tuned'), ('MLET k=64 d=16', 'mlet')]
    >>> res = compare(cfg, emb_lr_mults=[1, 4, 10])          # doctest: +SKIP
    >>> [row["variant"] for row in res.rows]                # doctest: +SKIP
    ['single d=16', 'single d=16 emb-lr×4', 'single d=16 emb-lr×10', 'MLET k=64 d=16']
"""

from __future__ import annotations

import dataclasses
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence, Union

from ..errors import CheckpointError, ConfigError
from . import outputs as out_files
from . import staging
from .config import TrainConfig
from .ddp import setup
from .loop import TrainCallback
from .run import TrainResult, load_data, train_in

#: Keys of each comparison row (also the columns of the CLI table).
ROW_KEYS = ("variant", "role", "auc", "logloss", "pr_auc", "set_a_pr_auc", "set_b_pr_auc", "set_a_auc",
            "set_b_auc", "val_score", "selected_epoch", "emb_params_training", "emb_params_inference")


@dataclass
class CompareResult:
    """What :func:`compare` returns.

    Attributes:
        rows: one dict per trained variant (keys :data:`ROW_KEYS`); ``role`` is ``baseline``
            (paper's fixed lr), ``tuned`` (an emb-lr multiplier) or ``mlet``.
        summary: MLET's deltas vs the paper baseline (``vs_paper``) and vs the best baseline on
            validation (``vs_best``, with ``best_variant``), test AUC/LogLoss/PR-AUC and Set A/B PR-AUC.
        results: the full :class:`TrainResult` of every variant, in row order.
        out_dir: where ``compare.json`` and one sub-directory per variant were written (or None).
    """

    rows: list[dict[str, Any]]
    summary: dict[str, Any]
    results: list[TrainResult] = field(default_factory=list)
    out_dir: Optional[Path] = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-able ``{"rows", "summary"}`` (the content of ``compare.json``)."""
        return {"rows": self.rows, "summary": self.summary}


def _slug(variant: str) -> str:
    return variant.replace("MLET ", "mlet_").replace("single ", "single_").replace(" emb-lr×", "_lr").replace(
        "k=", "k").replace("d=", "d").replace(" ", "_").replace("=", "")


def _row(res: TrainResult, role: str) -> dict[str, Any]:
    m = res.metrics
    val = m.get("val", {})
    sel = res.config.select
    return {
        "variant": m["variant"],
        "role": role,
        "auc": m["test"].get("auc"),
        "logloss": m["test"].get("logloss"),
        "pr_auc": m["test"].get("pr_auc"),
        "set_a_pr_auc": m["set_a"].get("pr_auc"),
        "set_b_pr_auc": m["set_b"].get("pr_auc"),
        "set_a_auc": m["set_a"].get("auc"),
        "set_b_auc": m["set_b"].get("auc"),
        "val_score": val.get(sel),
        "selected_epoch": m["selected_epoch"],
        "emb_params_training": m["params"]["embedding_training"],
        "emb_params_inference": m["params"]["embedding_inference"],
    }


def _delta(mlet: dict[str, Any], base: dict[str, Any]) -> dict[str, Any]:
    out = {}
    for k in ("auc", "logloss", "pr_auc", "set_a_pr_auc", "set_b_pr_auc"):
        a, b = mlet.get(k), base.get(k)
        out[k] = None if a is None or b is None else a - b
    return out


def compare_variants(cfg: TrainConfig, emb_lr_mults: Optional[Sequence[float]] = None) -> list[tuple[TrainConfig, str]]:
    """The configs :func:`compare` trains: baseline (k=0, ×1), tuned baselines (k=0, ×m), MLET.

    ``cfg.inner_dim == 0`` is treated as 64 for the MLET variant (the paper's strong default).
    """
    k = cfg.inner_dim or 64
    variants = [(dataclasses.replace(cfg, inner_dim=0, emb_lr_mult=1.0), "baseline")]
    for mult in emb_lr_mults or ():
        if float(mult) <= 0:
            raise ConfigError(f"emb_lr_mults must be > 0, got {mult}")
        if float(mult) != 1.0:
            variants.append((dataclasses.replace(cfg, inner_dim=0, emb_lr_mult=float(mult)), "tuned"))
    variants.append((dataclasses.replace(cfg, inner_dim=k), "mlet"))
    return variants


def compare(
    cfg: TrainConfig,
    splits: Any = None,
    *,
    emb_lr_mults: Optional[Sequence[float]] = None,
    out: Union[str, Path, None] = None,
    force: bool = False,
    resume: bool = False,
    callback: Optional[TrainCallback] = None,
) -> CompareResult:
    """Train single-layer and MLET models on the same data and seed and compare them.

    The whole root is staged (``<parent>/.<name>.incomplete/``, see :mod:`.staging`) and renamed into
    place when every variant is done, so a failed comparison leaves no half-written ``out``.

    Args:
        cfg: the shared settings (``inner_dim`` = the MLET variant's k; 0 means 64).
        splits: a ``DataSplits`` (``None`` loads ``cfg.data`` once for all variants).
        emb_lr_mults: also train single-layer baselines with these embedding-lr multipliers
            (``--tune-baseline``; ×1 is the paper baseline and is always trained).
        out: root directory: ``compare.json`` plus one run directory per variant.
        force: allow a non-empty ``out`` and discard an unfinished comparison into it.
        resume: continue the comparison in ``out`` (see :func:`resume_compare`): each variant continues
            from its ``state.pt``, or starts when it has none.
        callback: progress hooks, called for each variant's run.

    Returns:
        A :class:`CompareResult`.
    """
    cfg = cfg.resolved()
    out_dir = Path(out) if out is not None else None
    info = setup(cfg.device)
    variants = compare_variants(cfg, emb_lr_mults)
    stage = None
    if out_dir is not None:
        marker = {"kind": "compare", "train_config": cfg.to_dict(),
                  "emb_lr_mults": [float(m) for m in emb_lr_mults] if emb_lr_mults else None}
        stage = (staging.open_resume(out_dir, info, marker) if resume
                 else staging.open_new_run(out_dir, force, info, {**marker, "variants_done": []}))
    try:
        result = _compare_in(cfg, splits, variants, stage.work if stage else None, info, resume, callback)
        if stage is not None and info.is_main:
            out_files.write_json(stage.work / out_files.COMPARE_FILE,
                                 {**result.to_dict(), "config": {"train_config": cfg.to_dict(),
                                                                 "emb_lr_mults": marker["emb_lr_mults"]}})
    except BaseException as exc:
        staging.record_failure(stage, info, exc)
        raise
    staging.commit(stage, info)
    if out_dir is not None:
        result.out_dir = out_dir
        for res in result.results:
            res.out_dir = out_dir / _slug(res.config.variant)
    return result


def _compare_in(cfg: TrainConfig, splits: Any, variants: list[tuple[TrainConfig, str]], work: Optional[Path],
                info: Any, resume: bool, callback: Optional[TrainCallback]) -> CompareResult:
    """Train every variant into ``work/<variant>`` and build the comparison rows and summary."""
    if splits is None:
        splits = load_data(cfg.data)
    rows, results, done = [], [], []
    for vcfg, role in variants:
        sub = work / _slug(vcfg.variant) if work is not None else None
        res = train_in(vcfg, splits, sub, info, resume=resume, callback=callback)
        results.append(res)
        rows.append(_row(res, role))
        done.append(vcfg.variant)
        if work is not None and info.is_main:
            staging.write_marker(work, {}, variants_done=done)
    mlet = next(r for r in rows if r["role"] == "mlet")
    baselines = [r for r in rows if r["role"] != "mlet"]
    paper = baselines[0]
    sign = 1.0 if cfg.select == "auc" else -1.0
    best = max(baselines, key=lambda r: sign * (r["val_score"] if r["val_score"] is not None else -sign * 1e300))
    summary = {
        "select": cfg.select,
        "paper_baseline": paper["variant"],
        "best_variant": best["variant"],
        "vs_paper": _delta(mlet, paper),
        "vs_best": _delta(mlet, best),
    }
    return CompareResult(rows, summary, results, work)


def resume_compare(
    root: Union[str, Path],
    *,
    epochs: Optional[int] = None,
    patience: Optional[int] = None,
    callback: Optional[TrainCallback] = None,
) -> CompareResult:
    """Continue a comparison (finished, or unfinished after a failure) with the settings it was started with.

    Each variant continues from its ``state.pt`` (the last finished epoch); a variant that had not finished
    an epoch, or had not started, is trained from the start.

    Args:
        root: the ``out`` of :func:`compare`.
        epochs / patience: new values (None: the saved ones).
        callback: progress hooks.

    Returns:
        The :class:`CompareResult`.

    Raises:
        CheckpointError: ``root`` holds no comparison, or a finished one whose variants saved no state.
        ConfigError: invalid ``epochs``/``patience``.

    Example:
        >>> resume_compare("runs/ddp", epochs=3).summary["vs_best"]["auc"]   # doctest: +SKIP
        0.0042
    """
    root = Path(root)
    unfinished = staging.staging_dir(root)
    if unfinished.is_dir():
        saved = staging.read_marker(unfinished)
    else:
        doc = out_files.read_json(root / out_files.COMPARE_FILE)
        saved = doc.get("config") if isinstance(doc, dict) else None
        if not isinstance(saved, dict):
            raise CheckpointError(f"{root / out_files.COMPARE_FILE} records no settings (written before 0.2.0); "
                                  "run the comparison again")
        missing = [p.name for p in root.iterdir() if p.is_dir() and not (p / out_files.STATE_FILE).is_file()]
        if missing:
            raise CheckpointError(f"{root}: variants {missing} saved no state.pt (save_state=False); they cannot "
                                  "be continued")
    if not saved.get("train_config"):
        raise CheckpointError(f"{unfinished}: its INCOMPLETE.json records no settings; start the comparison again")
    cfg = TrainConfig.from_dict(saved["train_config"])
    cfg = dataclasses.replace(cfg, epochs=epochs if epochs is not None else cfg.epochs,
                              patience=patience if patience is not None else cfg.patience)
    return compare(cfg, emb_lr_mults=saved.get("emb_lr_mults"), out=root, resume=True, callback=callback)


def compare_seeds(
    cfg: TrainConfig,
    seeds: Sequence[int],
    splits: Any = None,
    *,
    emb_lr_mults: Optional[Sequence[float]] = None,
    out: Union[str, Path, None] = None,
    force: bool = False,
    callback: Optional[TrainCallback] = None,
) -> dict[str, Any]:
    """:func:`compare` for several training seeds on the same data split; mean and std per variant.

    Args:
        cfg: shared settings (its ``seed`` is replaced by each of ``seeds``).
        seeds: training seeds.
        splits / emb_lr_mults / force / callback: as :func:`compare`.
        out: root directory; each seed writes ``out/seed<N>/``.

    Returns:
        ``{"seeds", "rows": [{"variant", "role", "<metric>": mean, "<metric>_std": std, ...}],
        "summary": {"vs_paper": {...}, "vs_best": {...}, "best_variant"}}`` where deltas are means over
        seeds and ``best_variant`` is the baseline with the best mean validation score.
    """
    if not seeds:
        raise ConfigError("compare_seeds needs at least one seed")
    cfg = cfg.resolved()
    if splits is None:
        splits = load_data(cfg.data)
    runs = []
    for seed in seeds:
        sub = Path(out) / f"seed{seed}" if out is not None else None
        runs.append(compare(dataclasses.replace(cfg, seed=int(seed)), splits, emb_lr_mults=emb_lr_mults, out=sub,
                            force=force, callback=callback))
    metrics = [k for k in ROW_KEYS if k not in ("variant", "role")]
    rows = []
    for i, first in enumerate(runs[0].rows):
        row: dict[str, Any] = {"variant": first["variant"], "role": first["role"]}
        for key in metrics:
            vals = [r.rows[i][key] for r in runs if r.rows[i][key] is not None]
            row[key] = statistics.fmean(vals) if vals else None
            row[key + "_std"] = statistics.pstdev(vals) if len(vals) > 1 else 0.0
        rows.append(row)
    sign = 1.0 if cfg.select == "auc" else -1.0
    baselines = [r for r in rows if r["role"] != "mlet"]
    best = max(baselines, key=lambda r: sign * r["val_score"] if r["val_score"] is not None else float("-inf"))
    mlet = next(r for r in rows if r["role"] == "mlet")
    return {
        "seeds": [int(s) for s in seeds],
        "rows": rows,
        "summary": {"select": cfg.select, "paper_baseline": baselines[0]["variant"], "best_variant": best["variant"],
                    "vs_paper": _delta(mlet, baselines[0]), "vs_best": _delta(mlet, best)},
    }


__all__ = ["CompareResult", "compare", "resume_compare", "compare_seeds", "compare_variants", "ROW_KEYS"]
