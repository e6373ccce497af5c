"""``mlet-compress diagnose``: the update MLET induces on each table (paper §3), from a factors checkpoint."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

from mlet_compress.diagnose import diagnose_checkpoint, plot_spectra
from mlet_compress.errors import ConfigError
from mlet_compress.sweep.plots import have_matplotlib
from mlet_compress.training.outputs import jsonable

from ._common import err, out


def diagnose_cmd(
    checkpoint: Path = typer.Argument(..., help="A checkpoint with MLET factors (factors.safetensors of a --keep-factors run)."),
    rows: int = typer.Option(256, "--rows", min=1, help="Rows of the sampled update (random gradients on them)."),
    seed: int = typer.Option(0, "--seed", help="Seed of the row sample and the gradients."),
    plot: Optional[Path] = typer.Option(None, "--plot", help="Write a PNG of the spectra here (needs the [plots] extra)."),
    as_json: bool = typer.Option(False, "--json", help="Print the full diagnosis (every spectrum) as JSON."),
) -> None:
    """Diagnose MLET tables (paper §3): spectra, learning-rate amplification, cross-category share of updates.

    Per uncollapsed MLET table: singular values of the projection P, the table T and the collapsed T Pᵀ; the
    learning-rate amplification of the row-local update (eigenvalues of P Pᵀ: with SGD, a single-layer
    model needs its embedding lr multiplied by about the mean one to match); and the cross-category share
    of an update for random gradients on sampled rows.

    Example:

        mlet-compress diagnose runs/avazu/factors.safetensors --plot spectra.png
    """
    if plot is not None and not have_matplotlib():
        raise ConfigError('--plot needs matplotlib: pip install "mlet-compress[plots]"')
    diag = diagnose_checkpoint(checkpoint, rows=rows, seed=seed)
    if plot is not None:
        plot_spectra(diag, plot)
    if as_json:
        print(json.dumps(jsonable(diag.to_dict()), indent=2))
    else:
        t = Table(title=f"{checkpoint}: MLET update diagnosis ({len(diag.tables)} tables)")
        for col in ("table", "n", "k", "d", "top σ(P)", "lr amp. mean", "lr amp. top", "top σ(W)", "cross share"):
            t.add_column(col, justify="left" if col == "table" else "right")
        for d in diag.tables:
            a, c = d.lr_amplification, d.cross_category
            t.add_row(d.name, f"{d.n:,}", str(d.k), str(d.d), f"{d.proj_singular_values[0]:.3g}", f"{a['mean']:.3g}",
                      f"{a['top']:.3g}", f"{d.collapsed_singular_values[0]:.3g}", f"{c['share']:.3f}")
        out.print(t)
        out.print("lr amp. = eigenvalues of P Pᵀ (row-local term, plain SGD); cross share = ‖cross-row update‖² / "
                  f"‖update‖² for N(0,1) gradients on up to {rows} sampled rows per table")
    if plot is not None:
        err.print(f"wrote {plot}")
