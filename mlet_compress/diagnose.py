"""``diagnose``: what MLET's factorisation does to the updates of each table (paper §3), from a checkpoint.

For every uncollapsed MLET table (``T`` n×k, ``P`` d×k; a ``train --keep-factors`` run's
``factors.safetensors``) it reports the singular values of the projection, of the table ``T`` and of the
collapsed ``W = T Pᵀ``; the learning-rate amplification of the row-local update term (the eigenvalues of
``P Pᵀ``, the same as the non-zero ones of ``Pᵀ P``): a single-layer table trained with plain SGD would
need its embedding learning rate multiplied by about the **mean** eigenvalue to move its rows as far; and
the cross-category share of an update, estimated with random gradients on a seeded sample of rows. The
formulas are in :mod:`mlet_compress.ops.spectra`.

Example:
    >>> rep = diagnose_checkpoint("runs/demo/factors.safetensors")        # doctest: +SKIP
    >>> rep.tables[0].lr_amplification["mean"]                            # doctest: +SKIP
    3.7
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Union

import torch

from .atomic import atomic_path
from .checkpoint import load_checkpoint
from .errors import ConfigError, TargetingError
from .ops.spectra import collapsed_singular_values, cross_category_share, lr_amplification, sample_rows, singular_values


@dataclass(frozen=True)
class TableDiagnosis:
    """One MLET table.

    Attributes:
        name: table name. n / k / d: rows, inner dim, embedding dim.
        proj_singular_values: σ(P), d values. table_singular_values: σ(T), k values.
        collapsed_singular_values: σ(T Pᵀ), d values.
        lr_amplification: ``{"top", "mean", "min", "top_over_mean"}`` eigenvalues of P Pᵀ.
        cross_category: ``{"share", "touched_share", "rows_moved", "sample_rows"}``.
    """

    name: str
    n: int
    k: int
    d: int
    proj_singular_values: list[float]
    table_singular_values: list[float]
    collapsed_singular_values: list[float]
    lr_amplification: dict[str, float]
    cross_category: dict[str, Any]


@dataclass(frozen=True)
class Diagnosis:
    """What :func:`diagnose_checkpoint` returns; :meth:`to_dict` is the ``--json`` output."""

    path: str
    tables: list[TableDiagnosis]
    skipped: dict[str, str]

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form."""
        return dataclasses.asdict(self)


def diagnose_table(name: str, T: torch.Tensor, P: torch.Tensor, *, rows: int = 256, seed: int = 0) -> TableDiagnosis:
    """Diagnose one MLET table from its factors.

    Args:
        name: table name. T: table n×k. P: projection d×k.
        rows: rows of the sampled update (random N(0, 1) gradients on that many distinct rows).
        seed: seed of the row sample and the gradients.

    Returns:
        A :class:`TableDiagnosis`.

    Raises:
        ConfigError: inconsistent factor shapes or ``rows < 1``.
    """
    if rows < 1:
        raise ConfigError(f"rows must be >= 1 (rows of the sampled update), got {rows}")
    idx = sample_rows(T.shape[0], rows, seed)
    gen = torch.Generator().manual_seed(int(seed) + 1)
    grads = torch.randn(idx.numel(), P.shape[0], generator=gen, dtype=torch.float64)
    cross = cross_category_share(T, P, idx, grads)
    return TableDiagnosis(
        name=name, n=int(T.shape[0]), k=int(T.shape[1]), d=int(P.shape[0]),
        proj_singular_values=singular_values(P).tolist(), table_singular_values=singular_values(T).tolist(),
        collapsed_singular_values=collapsed_singular_values(T, P).tolist(), lr_amplification=lr_amplification(P),
        cross_category={**cross, "sample_rows": int(idx.numel())},
    )


def diagnose_checkpoint(path: Union[str, Path], *, rows: int = 256, seed: int = 0) -> Diagnosis:
    """Diagnose every uncollapsed MLET table of a checkpoint.

    Args:
        path: a checkpoint with MLET factors (``factors.safetensors`` of a ``keep_factors=True`` run, or any
            file saved from a wrapped model).
        rows / seed: the sampled update of :func:`diagnose_table`.

    Returns:
        A :class:`Diagnosis` (``skipped``: the other tables and why).

    Raises:
        CheckpointError: unreadable file. TargetingError: no MLET table in it (e.g. a collapsed model).
    """
    ckpt = load_checkpoint(path)
    out, skipped = [], {}
    for name, ent in sorted(ckpt.tables.items()):
        if ent.kind != "mlet":
            skipped[name] = f"{ent.display_kind()} table (no MLET factors)"
            continue
        T = ckpt.tensors[ent.factors["table"].key]
        P = ckpt.tensors[ent.factors["proj"].key]
        out.append(diagnose_table(name, T, P, rows=rows, seed=seed))
    if not out:
        raise TargetingError(
            f"{str(path)!r} has no uncollapsed MLET table ({len(skipped)} other tables); diagnose needs the factors: "
            "train with {keep_factors} and pass its factors.safetensors", options={"keep_factors": True})
    return Diagnosis(str(path), out, skipped)


def plot_spectra(diag: Diagnosis, png: Union[str, Path], *, max_tables: int = 12) -> Path:
    """A PNG of the spectra: eigenvalues of P Pᵀ and singular values of the collapsed table, per table.

    Args:
        diag: a :class:`Diagnosis`. png: output path (written atomically). max_tables: largest tables shown.

    Raises:
        ImportError: matplotlib is not installed (``pip install "mlet-compress[plots]"``).
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(9, 3.4), dpi=80, layout="constrained")
    ax1, ax2 = fig.subplots(1, 2)
    shown = sorted(diag.tables, key=lambda t: -t.n)[:max_tables]
    for t in shown:
        ev = [s * s for s in t.proj_singular_values]
        ax1.plot(range(1, len(ev) + 1), ev, marker="o", ms=3, label=f"{t.name.split('.')[-1]} (n={t.n})")
        ax2.plot(range(1, t.d + 1), t.collapsed_singular_values, marker="o", ms=3)
    ax1.set(yscale="log", xlabel="index", ylabel="eigenvalue of P Pᵀ (lr amplification)",
            title="row-local lr amplification per direction")
    ax2.set(yscale="log", xlabel="index", ylabel="singular value", title="collapsed table W = T Pᵀ")
    for ax in (ax1, ax2):
        ax.grid(alpha=0.3)
    ax1.legend(fontsize=6, ncol=2)
    FigureCanvasAgg(fig)
    with atomic_path(Path(png), make_parents=True) as tmp:
        fig.savefig(tmp, format="png")
    return Path(png)


def summary_line(t: TableDiagnosis, digits: Optional[int] = 3) -> str:
    """One line per table for terminals and logs."""
    a, c = t.lr_amplification, t.cross_category
    return (f"{t.name}: n={t.n} k={t.k} d={t.d}; lr amplification mean {a['mean']:.{digits}g} (top {a['top']:.{digits}g}); "
            f"cross-category share {c['share']:.{digits}f}")


__all__ = ["TableDiagnosis", "Diagnosis", "diagnose_table", "diagnose_checkpoint", "plot_spectra", "summary_line"]
