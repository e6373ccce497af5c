"""``mlet-compress eval``: test metrics of any checkpoint on its training run's own test split."""

from __future__ import annotations

import json
from contextlib import nullcontext
from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

from mlet_compress.train import evaluate_checkpoint
from mlet_compress.training.outputs import jsonable

from ._common import err, out


def eval_cmd(
    checkpoint: Path = typer.Argument(..., help="A .safetensors checkpoint (plain, collapsed, SVD, quantized or hashed)."),
    data: Optional[Path] = typer.Option(None, "--data", help="Raw data path (default: the one recorded at training)."),
    format: Optional[str] = typer.Option(None, "--format", help="Data format (default: the recorded one)."),
    test_data: Optional[Path] = typer.Option(None, "--test-data", help="Separate test file (default: the recorded one)."),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda or cuda:N."),
    batch_size: int = typer.Option(4096, "--batch-size", min=1, help="Inference batch size."),
    as_json: bool = typer.Option(False, "--json", help="Print the metrics as JSON instead of a table."),
) -> None:
    """Evaluate a checkpoint: AUC, LogLoss, PR-AUC and the Set A / Set B (most / least frequent 10%) figures.

    The checkpoint (or config.json + preprocessor.json beside it) carries the model config,
    vocabularies, preprocessing options and split seed, so the raw data file yields exactly the
    training run's test split. Compressed checkpoints of the same run compare on the same rows.

    Examples (after `mlet-compress train`, which links runs/latest to the run; --data is needed only when
    the data moved since training):

        mlet-compress eval runs/latest/model.safetensors --json

        mlet-compress eval runs/avazu/model.safetensors --data ../shared/data/avazu_sample/avazu_train_first8999.csv --format avazu
    """
    with err.status("evaluating", spinner="dots") if err.is_terminal else nullcontext():
        res = evaluate_checkpoint(
            checkpoint, data=str(data.resolve()) if data else None, format=format,
            test_data=str(test_data.resolve()) if test_data else None, device=device, batch_size=batch_size,
        )
    if as_json:
        print(json.dumps(jsonable(res), indent=2))
        return
    t = Table(title=f"{checkpoint} ({res['model']}, {res['rows']:,} test rows)")
    t.add_column("metric")
    t.add_column("value", justify="right")
    cal = res.get("calibration")
    rows = [("AUC", res["test"].get("auc")), ("LogLoss", res["test"].get("logloss"))]
    if cal:
        rows = [rows[0], (f"LogLoss (calibrated, T={cal['temperature']:.3f})", res["test"].get("logloss")),
                ("LogLoss (raw, uncalibrated)", cal["logloss_raw"])]
    for name, value in (
        *rows, ("PR-AUC", res["test"].get("pr_auc")),
        ("Set A PR-AUC (most frequent 10%)", res["set_a"].get("pr_auc")), ("Set A AUC", res["set_a"].get("auc")),
        ("Set B PR-AUC (least frequent 10%)", res["set_b"].get("pr_auc")), ("Set B AUC", res["set_b"].get("auc")),
    ):
        t.add_row(name, "-" if value is None else f"{value:.4f}")
    out.print(t)
    out.print("tables: " + ", ".join(f"{n} {k}" for k, n in sorted(res["tables"].items())))
