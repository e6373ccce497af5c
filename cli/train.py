"""``mlet-compress train``: train a CTR model with single-layer or MLET embeddings (or compare them)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional

import torch
import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from mlet_compress.errors import ConfigError
from mlet_compress.train import TrainCallback, TrainConfig, compare, resume_compare, resume_run, train
from mlet_compress.training.ddp import distributed_session, is_main_process
from mlet_compress.training.outputs import default_run_dir, jsonable
from mlet_compress.training.staging import describe_resume, link_latest, run_kind

from . import data_options as _data
from ._common import err, out


class RichProgress(TrainCallback):
    """Training progress on stderr: a bar with loss and samples/s (on a terminal) plus one line per epoch."""

    def __init__(self) -> None:
        self.progress = Progress(
            TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
            TextColumn("loss {task.fields[loss]}"), TextColumn("{task.fields[rate]} samples/s"),
            TimeElapsedColumn(), TimeRemainingColumn(), console=err, transient=True, disable=not err.is_terminal,
        )
        self.task: Optional[int] = None
        self.name = ""

    def __enter__(self) -> "RichProgress":
        self.progress.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.progress.__exit__(*exc)

    def on_run_start(self, name: str, total_steps: int) -> None:  # noqa: D102
        self.name = name
        self.task = self.progress.add_task(name, total=total_steps, loss="-", rate="-")

    def on_step(self, step: int, loss: float, samples_per_s: float) -> None:  # noqa: D102
        if self.task is not None:
            self.progress.update(self.task, completed=step, loss=f"{loss:.4f}", rate=f"{samples_per_s:,.0f}")

    def on_epoch_end(self, epoch: int, record: dict[str, Any]) -> None:  # noqa: D102
        val = record.get("val") or {}
        tail = f", val AUC {val['auc']:.4f}, val LogLoss {val['logloss']:.4f}" if "auc" in val else ""
        self.progress.console.print(
            f"[dim]{self.name}[/] epoch {epoch}: train loss {record['train_loss']:.4f}{tail} ({record['seconds']:.1f}s)"
        )

    def on_info(self, text: str) -> None:  # noqa: D102
        self.progress.console.print(text)

    def on_run_end(self, name: str, metrics: dict[str, Any]) -> None:  # noqa: D102
        if self.task is not None:
            self.progress.remove_task(self.task)
            self.task = None


def _fmt(v: Any, digits: int = 4) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.{digits}f}"
    if isinstance(v, int):
        return f"{v:,}"
    return str(v)


def _mib(n: int) -> str:
    return f"{n / 2**20:,.2f}"


def _signed(v: Optional[float]) -> str:
    return "-" if v is None else f"{v:+.4f}"


def print_run(metrics: dict[str, Any], out_dir: Optional[Path]) -> None:
    """The end-of-run summary table."""
    t = Table(title=f"{metrics['model']} · {metrics['variant']}")
    t.add_column("metric")
    t.add_column("value", justify="right")
    rows = [
        ("test AUC", metrics["test"].get("auc")), ("test LogLoss", metrics["test"].get("logloss")),
        ("test PR-AUC", metrics["test"].get("pr_auc")), ("Set A PR-AUC (most frequent 10%)", metrics["set_a"].get("pr_auc")),
        ("Set B PR-AUC (least frequent 10%)", metrics["set_b"].get("pr_auc")),
        (f"val {'AUC' if metrics['select'] == 'auc' else 'LogLoss'} (selected epoch {metrics['selected_epoch']}/{metrics['epochs_run']})",
         metrics["val"].get(metrics["select"])),
        *_calibration_rows(metrics.get("calibration")),
        ("embedding params, training", metrics["params"]["embedding_training"]),
        ("embedding params, inference", metrics["params"]["embedding_inference"]),
    ]
    for name, value in rows:
        t.add_row(name, _fmt(value))
    mem = metrics.get("memory_bytes")
    if mem:  # MLET's real training cost: the factors plus their optimizer state, beside the inference tables
        t.add_row("embedding MiB, training (params + optimizer state)",
                  f"{_mib(mem['embedding_params_training'])} + {_mib(mem['embedding_optimizer_state'])} = "
                  f"{_mib(mem['embedding_training'])}")
        t.add_row("embedding MiB, inference", _mib(mem["embedding_inference"]))
    out.print(t)
    print_hashing(metrics.get("hashing"))
    if out_dir is not None:
        err.print(f"wrote {out_dir}/ (model.safetensors, metrics.json, config.json)")


def print_hashing(hashing: Optional[dict[str, Any]]) -> None:
    """Which tables --hash-ratio hashed (rows → buckets) and why the others were not."""
    if not hashing:
        return
    done = ", ".join(f"{n} {h['rows']:,}→{h['buckets']:,}" for n, h in sorted(hashing["hashed"].items())) or "none"
    err.print(f"hashed (ratio {hashing['ratio']}, tables of >= {hashing['min_rows']:,} rows): {done}")
    for name, why in sorted(hashing["skipped"].items()):
        err.print(f"  not hashed {name}: {why}")


def _calibration_rows(cal: Optional[dict[str, Any]]) -> list[tuple[str, Any]]:
    """Rows of the calibrated LogLoss (``--calibrate``), empty without calibration."""
    if not cal:
        return []
    return [(f"test LogLoss calibrated (T={cal['temperature']:.3f} fitted on val)", cal["test_logloss"]),
            ("val LogLoss raw -> calibrated", f"{cal['val_logloss_raw']:.4f} -> {cal['val_logloss']:.4f}")]


def print_compare(res: Any) -> None:
    """Single-layer vs MLET side by side (one column per variant, then MLET's deltas)."""
    rows, summ = res.rows, res.summary
    t = Table(title="single-layer vs MLET (same data, same seed)")
    t.add_column("metric")
    for r in rows:
        label = r["variant"] + (" *" if r["variant"] == summ["best_variant"] and len(rows) > 2 else "")
        t.add_column(label, justify="right")
    tuned = len(rows) > 2
    t.add_column("Δ MLET vs paper baseline" if tuned else "Δ MLET − single", justify="right")
    if tuned:
        t.add_column("Δ MLET vs best baseline", justify="right")
    spec = [("test AUC", "auc"), ("test LogLoss", "logloss"), ("test PR-AUC", "pr_auc"),
            ("Set A PR-AUC", "set_a_pr_auc"), ("Set B PR-AUC", "set_b_pr_auc"),
            (f"val {'AUC' if summ['select'] == 'auc' else 'LogLoss'} (selects epoch)", "val_score"), ("selected epoch", "selected_epoch"),
            ("emb params (train)", "emb_params_training"), ("emb params (infer)", "emb_params_inference")]
    for name, key in spec:
        cells = [_fmt(r[key]) for r in rows]
        extra = [_signed(summ["vs_paper"].get(key)) if key in summ["vs_paper"] else ""]
        if tuned:
            extra.append(_signed(summ["vs_best"].get(key)) if key in summ["vs_best"] else "")
        t.add_row(name, *cells, *extra)
    out.print(t)
    if tuned:
        out.print(f"* best single-layer baseline on validation {summ['select']}: {summ['best_variant']}")
    if res.results:
        print_hashing(res.results[0].metrics.get("hashing"))
    if res.out_dir is not None:
        err.print(f"wrote {res.out_dir}/ (compare.json and one run directory per variant)")


def train_cmd(
    model: str = typer.Option("dlrm", "--model", help="dlrm, wdl, deepfm, xdeepfm, dcn, autoint or nfm."),
    data: Optional[Path] = _data.DATA,
    format: Optional[str] = _data.FORMAT,
    label: Optional[str] = _data.LABEL,
    categorical: Optional[str] = _data.CATEGORICAL,
    numeric: Optional[str] = _data.NUMERIC,
    val_data: Optional[Path] = _data.VAL_DATA,
    test_data: Optional[Path] = _data.TEST_DATA,
    min_freq: int = _data.MIN_FREQ,
    split_seed: int = _data.SPLIT_SEED,
    skip_bad_rows: bool = _data.SKIP_BAD_ROWS,
    rows: Optional[int] = _data.ROWS,
    dim: int = typer.Option(16, "--dim", min=1, help="Embedding dimension d (at inference)."),
    mlet_k: int = typer.Option(64, "--mlet-k", min=0, help="MLET inner dimension k; 0 = single-layer tables."),
    init_std: Optional[float] = typer.Option(None, "--init-std", help="MLET projection init std (paper: 0.25 DLRM, 0.5 others)."),
    hash_ratio: Optional[float] = typer.Option(None, "--hash-ratio", help="Hash tables of >= --hash-min-rows rows to this fraction of their rows (the run says which and why)."),
    hash_min_rows: int = typer.Option(1000, "--hash-min-rows", min=1, help="Smallest table --hash-ratio hashes."),
    optimizer: Optional[str] = typer.Option(None, "--optimizer", help="sgd, adagrad or rowwise_adagrad (one accumulator per table row; paper: SGD for DLRM, Adagrad others)."),
    lr: Optional[float] = typer.Option(None, "--lr", help="Learning rate (paper: 0.2 SGD, 0.02 Adagrad)."),
    emb_lr_mult: float = typer.Option(1.0, "--emb-lr-mult", help="Learning-rate multiplier of the embedding parameters."),
    batch_size: int = typer.Option(128, "--batch-size", min=1, help="Global mini-batch size."),
    epochs: Optional[int] = typer.Option(None, "--epochs", min=1, help="Maximum epochs (default 1, the paper's)."),
    patience: Optional[int] = typer.Option(None, "--patience", min=1, help="Early-stop after P epochs without val improvement (default 2)."),
    select: str = typer.Option("auc", "--select", help="Validation metric that selects the epoch: auc or logloss."),
    calibrate: bool = typer.Option(False, "--calibrate", help="Fit one temperature on validation (stored; eval applies it)."),
    seed: int = typer.Option(0, "--seed", help="Training seed."),
    out_dir: Optional[Path] = typer.Option(None, "--out", help="Run directory (default runs/<timestamp>, linked as runs/latest). Written as a hidden .NAME.incomplete directory until the run finishes."),
    force: bool = typer.Option(False, "--force", help="Write into a non-empty --out (its run files are replaced), or start over after an unfinished run."),
    keep_factors: bool = typer.Option(False, "--keep-factors", help="Also save the uncollapsed MLET factors."),
    do_compare: bool = typer.Option(False, "--compare", help="Train single-layer and MLET and print them side by side."),
    tune_baseline: bool = typer.Option(False, "--tune-baseline", help="With --compare: also tune the baseline's embedding lr."),
    emb_lr_mults: str = typer.Option("1,4,10", "--emb-lr-mults", help="Embedding-lr multipliers for --tune-baseline."),
    resume: Optional[Path] = typer.Option(None, "--resume", help="Continue the run (or --compare root) in this directory, finished or interrupted: from the last finished epoch (state.pt), or from the start if none finished. --epochs/--patience may change."),
    max_steps: Optional[int] = typer.Option(None, "--max-steps", min=1, help="Cap on steps per epoch (smoke tests)."),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda or cuda:N."),
    threads: Optional[int] = typer.Option(None, "--threads", min=1, help="CPU threads for torch (default: torch's choice)."),
    as_json: bool = typer.Option(False, "--json", help="Print metrics.json (or compare.json) to stdout instead of tables."),
    engine: str = typer.Option("torch", "--engine", help="torch (the package's models; DDP under torchrun) or torchrec (DLRM on TorchRec's EmbeddingBagCollection, sharded by DistributedModelParallel; needs the torchrec extra)."),
    sharding: str = typer.Option("table_wise", "--sharding", help="--engine torchrec: table_wise, column_wise or data_parallel (row_wise needs CUDA)."),
) -> None:
    """Train a CTR model on a dataset (or the synthetic default) and save an inference-ready checkpoint.

    MLET (--mlet-k > 0) trains each embedding table as an n×k table times a k→d projection and
    collapses it to n×d when saving, so the saved model has the plain architecture. --compare
    trains single-layer and MLET on the same data and seed; --tune-baseline adds single-layer models
    with raised embedding learning rates and compares MLET with the best of them on validation.
    Runs under `torchrun --nproc-per-node N` with DDP (rank 0 writes). A run that fails leaves only
    .NAME.incomplete beside --out; --resume continues it, --force starts over. --engine torchrec trains
    DLRM on TorchRec's EmbeddingBagCollection sharded by DistributedModelParallel (gloo on CPU, also in
    one process), prints the sharding plan and writes the same run directory (rank 0 gathers, collapses
    and writes one table at a time).

    Examples:

        mlet-compress train --compare

        mlet-compress train --keep-factors                        # then: mlet-compress inspect runs/latest/factors.safetensors

        mlet-compress train --model deepfm --data ../shared/data/avazu_sample/avazu_train_first8999.csv --format avazu --dim 8 --epochs 5 --out runs/avazu

        mlet-compress train --resume runs/avazu --epochs 8

        torchrun --nproc-per-node 2 -m mlet_compress.cli.app train --engine torchrec --out runs/torchrec-engine
    """
    if threads is not None:
        torch.set_num_threads(threads)
    with distributed_session():  # leaves a torchrun process group on the way out, also after an error
        if resume is not None:
            _resume(resume, epochs, patience, as_json)
            return
        _check_flags(data, format, rows, do_compare, tune_baseline)
        _check_engine(engine.lower(), sharding.lower(), do_compare)
        spec = _data.data_spec(data, format, label, categorical, numeric, val_data, test_data, min_freq, split_seed,
                            skip_bad_rows, rows)
        cfg = TrainConfig(
            model=model.lower(), dim=dim, inner_dim=mlet_k, init_std=init_std, hash_ratio=hash_ratio,
            hash_min_rows=hash_min_rows,
            optimizer=optimizer.lower() if optimizer else None, lr=lr, emb_lr_mult=emb_lr_mult, batch_size=batch_size,
            epochs=epochs or 1, patience=patience if patience is not None else 2, select=select, calibrate=calibrate, seed=seed,
            keep_factors=keep_factors, max_steps_per_epoch=max_steps, device=device, data=spec,
            engine=engine.lower(), sharding=sharding.lower(),
        )
        target = out_dir or default_run_dir()
        with RichProgress() as cb:
            if do_compare:
                mults = [float(m) for m in _data.csv_list(emb_lr_mults) or []] if tune_baseline else None
                res = compare(cfg, emb_lr_mults=mults, out=target, force=force, callback=cb)
            else:
                res = train(cfg, out=target, force=force, callback=cb)
        if out_dir is None and is_main_process():
            link = link_latest(target)
            if link is not None and not as_json:
                err.print(f"{link} -> {target.name}")
        if not do_compare:
            _report_run(res.metrics, res.out_dir, as_json)
        else:
            _report_compare(res, as_json)


def _resume(path: Path, epochs: Optional[int], patience: Optional[int], as_json: bool) -> None:
    """``--resume``: continue a run or a comparison root, saying first what will happen."""
    kind = run_kind(path)
    if is_main_process() and not as_json:
        err.print(describe_resume(path))
    with RichProgress() as cb:
        if kind == "compare":
            res = resume_compare(path, epochs=epochs, patience=patience, callback=cb)
        else:
            res = resume_run(path, epochs=epochs, patience=patience, callback=cb)
    if kind == "compare":
        _report_compare(res, as_json)
    else:
        _report_run(res.metrics, res.out_dir, as_json)


def _report_compare(res: Any, as_json: bool) -> None:
    if not is_main_process():
        return
    if as_json:
        print(json.dumps(jsonable(res.to_dict()), indent=2))
    else:
        print_compare(res)


def _check_flags(data: Optional[Path], format: Optional[str], rows: Optional[int], do_compare: bool,
                 tune_baseline: bool) -> None:
    """Combinations of flags that make no sense (before anything is read or trained)."""
    if data is not None and not format:
        raise ConfigError("--data needs --format (criteo, avazu, movielens, libfm or csv)")
    if rows is not None and data is not None:
        raise ConfigError("--rows sizes the synthetic default; drop it when passing --data")
    if tune_baseline and not do_compare:
        raise ConfigError("--tune-baseline only applies to --compare; add --compare")


def _check_engine(engine: str, sharding: str, do_compare: bool) -> None:
    """``--engine`` / ``--sharding`` combinations (before anything is read or trained)."""
    if engine not in ("torch", "torchrec"):
        raise ConfigError(f"--engine {engine!r} is unknown; use torch or torchrec")
    if engine == "torch" and sharding != "table_wise":
        raise ConfigError("--sharding applies to --engine torchrec; add --engine torchrec or drop --sharding")
    if engine == "torchrec" and do_compare:
        raise ConfigError("--compare runs the torch engine only; drop --engine torchrec (or train each variant with "
                          "--mlet-k 0 and --mlet-k K)")


def _report_run(metrics: dict[str, Any], out_dir: Optional[Path], as_json: bool) -> None:
    if not is_main_process():
        return
    if as_json:
        print(json.dumps(jsonable(metrics), indent=2))
    else:
        print_run(metrics, out_dir)
