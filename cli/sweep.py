"""``mlet-compress sweep``: quality vs size over a grid of models, arms, d, k, seeds and compression stages."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional

import torch
import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from mlet_compress.errors import ConfigError
from mlet_compress.sweep import SweepCallback, SweepConfig, run_sweep
from mlet_compress.training.outputs import jsonable

from . import data_options as _data
from ._common import err, out


class SweepProgress(SweepCallback):
    """A bar over cells with the ETA (on a terminal) and one line per finished cell on stderr."""

    def __init__(self) -> None:
        self.progress = Progress(TextColumn("[bold]sweep"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                                 TimeRemainingColumn(), console=err, transient=True, disable=not err.is_terminal)
        self.task: Optional[int] = None

    def __enter__(self) -> "SweepProgress":
        self.progress.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.progress.__exit__(*exc)

    def on_start(self, total: int, done: int) -> None:  # noqa: D102
        self.task = self.progress.add_task("sweep", total=total, completed=done)
        if done:
            self.progress.console.print(f"{done} of {total} cells already finished (read back)")

    def on_cell_done(self, cell: Any, rows: list[dict[str, Any]], seconds: float) -> None:  # noqa: D102
        if self.task is not None:
            self.progress.advance(self.task)
        r = rows[0]
        auc = "-" if r.get("auc") is None else f"{r['auc']:.4f}"
        ll = "-" if r.get("logloss") is None else f"{r['logloss']:.4f}"
        stages = ", ".join(f"{x['stage']} {x['auc']:.4f}" for x in rows[1:] if x.get("auc") is not None)
        self.progress.console.print(f"{cell.model} {cell.variant} seed {cell.seed}: AUC {auc}, LogLoss {ll}"
                                    + (f"; {stages}" if stages else "") + f" ({seconds:.1f}s)")

    def on_message(self, text: str) -> None:  # noqa: D102
        self.progress.console.print(f"[dim]{text}[/]")


def _ints(name: str, value: str) -> tuple[int, ...]:
    try:
        return tuple(int(v) for v in value.split(",") if v.strip())
    except ValueError:
        raise ConfigError(f"--{name} {value!r}: expected comma-separated integers") from None


def _floats(name: str, value: Optional[str]) -> tuple[float, ...]:
    try:
        return tuple(float(v) for v in (value or "").split(",") if v.strip())
    except ValueError:
        raise ConfigError(f"--{name} {value!r}: expected comma-separated numbers") from None


def sweep_cmd(
    model: str = typer.Option("dlrm", "--model", help="Comma-separated models (dlrm, deepfm, wdl, ...)."),
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
    dims: str = typer.Option("4,8,16", "--dims", help="Embedding dimensions d."),
    mlet_k: str = typer.Option("64", "--mlet-k", help="MLET inner dimensions k (one MLET arm each)."),
    seeds: str = typer.Option("0,1,2", "--seeds", help="Training seeds (arms are paired by seed)."),
    tune_baseline: bool = typer.Option(False, "--tune-baseline", help="Tune every arm's embedding lr (best on validation)."),
    emb_lr_mults: str = typer.Option("1,4,10", "--emb-lr-mults", help="Embedding-lr multipliers of --tune-baseline."),
    stages: str = typer.Option("q8,q4,svd:energy=0.95", "--stages", help="Stage chains: q8, q4, q8row, svd:rank=R, svd:energy=E, svd:rank=2+q8."),
    hash_ratios: Optional[str] = typer.Option(None, "--hash-ratios", help="Also train hashed variants (e.g. 0.5,0.25)."),
    epochs: int = typer.Option(1, "--epochs", min=1, help="Maximum epochs per cell (the paper's 1 by default)."),
    patience: int = typer.Option(2, "--patience", min=1, help="Early-stop after P epochs without val improvement."),
    select: str = typer.Option("auc", "--select", help="Validation metric that selects the epoch: auc or logloss."),
    calibrate: bool = typer.Option(False, "--calibrate", help="Fit one temperature per cell on validation; report both LogLoss."),
    batch_size: int = typer.Option(128, "--batch-size", min=1, help="Mini-batch size."),
    optimizer: Optional[str] = typer.Option(None, "--optimizer", help="sgd or adagrad (default: the paper's per model)."),
    lr: Optional[float] = typer.Option(None, "--lr", help="Learning rate (default: the paper's per model)."),
    init_std: Optional[float] = typer.Option(None, "--init-std", help="MLET projection init std (paper: 0.25 DLRM, 0.5 others)."),
    max_steps: Optional[int] = typer.Option(None, "--max-steps", min=1, help="Cap on steps per epoch (smoke tests)."),
    jobs: int = typer.Option(1, "--jobs", min=1, help="Worker processes (torch threads are split between them)."),
    threads: Optional[int] = typer.Option(None, "--threads", min=1, help="Total CPU threads for torch."),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda or cuda:N."),
    out_dir: Path = typer.Option(..., "--out", help="Sweep directory (rerun the same command to resume it)."),
    as_json: bool = typer.Option(False, "--json", help="Print results.json to stdout."),
) -> None:
    """Measure quality vs embedding size: train every cell, compress it with every stage, evaluate each file.

    Cells are (model, arm, d, k, seed): the paper's single-layer baseline, MLET per k and, with
    --tune-baseline, both arms at each embedding-lr multiplier (the best on validation is the tuned pick).
    Every cell's inference checkpoint goes through each --stages chain and is evaluated on the same test
    split. Writes results.json, results.csv, report.md (Tables 3-5 analogues) and PNG figures (with the
    [plots] extra) into --out. Rerunning the same command skips finished cells.

    Example:

        mlet-compress sweep --dims 4,8 --mlet-k 32 --seeds 0,1 --rows 20000 --epochs 2 --tune-baseline --stages q8,svd:rank=2 --out sweeps/demo
    """
    if data is not None and not format:
        raise ConfigError("--data needs --format (criteo, avazu, movielens, libfm or csv)")
    if rows is not None and data is not None:
        raise ConfigError("--rows sizes the synthetic default; drop it when passing --data")
    if threads is not None:
        torch.set_num_threads(threads)
    spec = _data.data_spec(data, format, label, categorical, numeric, val_data, test_data, min_freq, split_seed,
                           skip_bad_rows, rows)
    cfg = SweepConfig(
        models=tuple(_data.csv_list(model) or ()), dims=_ints("dims", dims), ks=_ints("mlet-k", mlet_k), seeds=_ints("seeds", seeds),
        tune_baseline=tune_baseline, emb_lr_mults=_floats("emb-lr-mults", emb_lr_mults),
        stages=tuple(_data.csv_list(stages) or ()), hash_ratios=_floats("hash-ratios", hash_ratios), epochs=epochs,
        patience=patience, select=select, batch_size=batch_size, optimizer=optimizer.lower() if optimizer else None,
        lr=lr, init_std=init_std, calibrate=calibrate, max_steps_per_epoch=max_steps, device=device, data=spec,
    )
    with SweepProgress() as cb:
        res = run_sweep(cfg, out_dir, jobs=jobs, threads=threads, callback=cb)
    if as_json:
        print(json.dumps(jsonable(res.rows), indent=2))
    else:
        out.print(f"{len(res.rows)} rows from {res.trained + res.reused} cells ({res.trained} trained, "
                  f"{res.reused} read back) in {res.seconds:.1f}s")
        out.print("wrote " + ", ".join(str(f) for f in res.files))
    for note in res.notes:
        err.print(note)
