"""The sweep's figures (matplotlib, the ``[plots]`` extra): the paper's Figs 5, 7 and 8 with error bars over seeds.

* ``fig5_auc_vs_bytes.png`` — test AUC vs embedding bytes (log x), one line per arm;
* ``fig7_auc_vs_k.png`` — MLET's test AUC vs k, one line per d, the paper baseline at that d dashed;
* ``fig8_stages.png`` — test AUC after each stage chain (and each hash ratio), grouped bars per arm.

Error bars are the sample standard deviation over seeds. matplotlib is used through its object API
(``Figure`` + the Agg canvas), so no global backend is switched.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any, Sequence

from ..atomic import atomic_path
from .config import NO_STAGE, SweepConfig
from .stats import mean_sd, report_arms, series

PLOTS_HINT = ("figures skipped: matplotlib is not installed; `pip install \"mlet-compress[plots]\"` and rerun the "
              "same sweep command (finished cells are read back) to draw them")
FIG5, FIG7, FIG8 = "fig5_auc_vs_bytes.png", "fig7_auc_vs_k.png", "fig8_stages.png"
Row = dict[str, Any]


def have_matplotlib() -> bool:
    """Whether matplotlib can be imported."""
    return importlib.util.find_spec("matplotlib") is not None


def _figure(nrows: int, ncols: int, w: float = 4.4, h: float = 3.3) -> tuple[Any, Any]:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(w * ncols, h * nrows), dpi=80, layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False)
    return fig, axes


def _save(fig: Any, path: Path) -> Path:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    return path


def _stat(by_seed: dict[int, Row], key: str) -> tuple[float, float]:
    mean, sd, _ = mean_sd(r[key] for r in by_seed.values())
    return mean if mean is not None else float("nan"), sd or 0.0


def _byte_ticks(ax: Any, rows: Sequence[Row], model: str) -> None:
    """Major ticks at the measured sizes, labelled with d and the bytes (no crowded minor labels)."""
    from matplotlib.ticker import NullFormatter, NullLocator

    sizes: dict[float, int] = {}
    for r in rows:
        if r["model"] == model and r["stage"] == NO_STAGE and r["hash_ratio"] is None and r.get("emb_bytes"):
            sizes.setdefault(float(r["emb_bytes"]), r["dim"])
    ticks = sorted(sizes)
    ax.xaxis.set_minor_locator(NullLocator())
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xticks(ticks, [f"d={sizes[b]}\n{b / 1e3:,.0f} kB" for b in ticks], fontsize=8)


def fig5(rows: Sequence[Row], cfg: SweepConfig, path: Path) -> Path:
    """Test AUC vs embedding bytes per arm (log x), one panel per model."""
    fig, axes = _figure(1, len(cfg.models), w=5.2, h=3.8)
    for ax, model in zip(axes[0], cfg.models):
        for arm in report_arms(cfg.ks, cfg.tune_baseline):
            s = series(rows, arm, model)
            dims = sorted(s)
            if not dims:
                continue
            xs = [_stat(s[d], "emb_bytes")[0] for d in dims]
            ys, es = zip(*(_stat(s[d], "auc") for d in dims))
            ax.errorbar(xs, ys, yerr=es, marker="o", ms=4, capsize=3, label=arm.label,
                        linestyle="--" if arm.arm == "single" else "-")
        ax.set_xscale("log")
        _byte_ticks(ax, rows, model)
        ax.set_title(f"{model}: test AUC vs embedding bytes", fontsize=10)
        ax.set_xlabel("embedding bytes (log)")
        ax.set_ylabel("test AUC (mean ± sd over seeds)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    return _save(fig, path)


def fig7(rows: Sequence[Row], cfg: SweepConfig, path: Path) -> Path:
    """MLET's test AUC vs k per d; the paper baseline at each d as a dashed line."""
    fig, axes = _figure(1, len(cfg.models))
    arms = report_arms(cfg.ks, False)
    for ax, model in zip(axes[0], cfg.models):
        for i, d in enumerate(cfg.dims):
            color = f"C{i % 10}"
            ks, ys, es = [], [], []
            for arm in arms[1:]:
                s = series(rows, arm, model).get(d)
                if s:
                    m, e = _stat(s, "auc")
                    ks.append(arm.k)
                    ys.append(m)
                    es.append(e)
            if ks:
                ax.errorbar(ks, ys, yerr=es, marker="o", ms=4, capsize=3, color=color, label=f"MLET d={d}")
            base = series(rows, arms[0], model).get(d)
            if base:
                ax.axhline(_stat(base, "auc")[0], color=color, linestyle="--", linewidth=1, label=f"baseline d={d}")
        ax.set_xscale("log", base=2)
        ax.set_xticks(list(cfg.ks), [str(k) for k in cfg.ks])
        ax.minorticks_off()
        ax.set_title(f"{model}: test AUC vs MLET k", fontsize=10)
        ax.set_xlabel("MLET inner dimension k")
        ax.set_ylabel("test AUC (mean ± sd over seeds)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, ncol=2)
    return _save(fig, path)


def _bars(ax: Any, rows: Sequence[Row], cfg: SweepConfig, model: str, d: int, groups: list) -> None:
    """One panel of Fig 8: grouped bars of the arms' test AUC per stage group."""
    arms = report_arms(cfg.ks, cfg.tune_baseline)
    width = 0.8 / len(arms)
    lo, hi = 1.0, 0.0
    for ai, arm in enumerate(arms):
        xs, ys, es = [], [], []
        for gi, (stage, ratio) in enumerate(groups):
            s = series(rows, arm, model, stage, ratio).get(d)
            if s:
                m, e = _stat(s, "auc")
                xs.append(gi + (ai - (len(arms) - 1) / 2) * width)
                ys.append(m)
                es.append(e)
                lo, hi = min(lo, m - e), max(hi, m + e)
        ax.bar(xs, ys, width, yerr=es, capsize=2, label=arm.label, color=f"C{ai % 10}", error_kw={"elinewidth": 0.8})
    if hi > lo:
        pad = 0.1 * (hi - lo) + 1e-3
        ax.set_ylim(lo - pad, hi + pad)
    labels = [s if r is None else f"hash×{r:g}" for s, r in groups]
    ax.set_xticks(range(len(groups)), labels, rotation=30, ha="right", fontsize=8)
    ax.set_title(f"{model}, d={d}: test AUC after each stage", fontsize=10)
    ax.set_ylabel("test AUC (mean ± sd)")
    ax.grid(alpha=0.3, axis="y")


def fig8(rows: Sequence[Row], cfg: SweepConfig, path: Path) -> Path:
    """Grouped bars: test AUC after each stage chain (and each hash ratio) per arm; a panel per model and d."""
    groups = [(s, None) for s in (NO_STAGE, *cfg.stages)] + [(NO_STAGE, r) for r in cfg.hash_ratios]
    panels = [(m, d) for m in cfg.models for d in cfg.dims]
    ncols = 1 if len(panels) == 1 else 2
    nrows = -(-len(panels) // ncols)
    fig, axes = _figure(nrows, ncols, w=max(4.4, 0.75 * len(groups) + 1.8), h=3.0)
    for i, (model, d) in enumerate(panels):
        _bars(axes[i // ncols][i % ncols], rows, cfg, model, d, groups)
    for j in range(len(panels), nrows * ncols):
        axes[j // ncols][j % ncols].set_visible(False)
    handles, names = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, names, loc="outside lower center", ncol=min(len(names), 6), fontsize=8)
    return _save(fig, path)


def write_figures(rows: Sequence[Row], cfg: SweepConfig, out: Path) -> list[Path]:
    """Draw Figs 5, 7 and 8 into ``out`` (PNG, written atomically).

    Raises:
        ImportError: matplotlib is not installed (check :func:`have_matplotlib` first).
    """
    return [fig5(rows, cfg, out / FIG5), fig7(rows, cfg, out / FIG7), fig8(rows, cfg, out / FIG8)]


__all__ = ["PLOTS_HINT", "FIG5", "FIG7", "FIG8", "have_matplotlib", "fig5", "fig7", "fig8", "write_figures"]
