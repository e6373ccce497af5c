"""``report.md`` of a sweep: the paper's Tables 3–5 with honest baselines, quality per stage, and flags.

Every table is computed from ``results.json`` rows by :mod:`.stats` (seed means, sample sd, paired
differences); :func:`write_report` also draws the figures when matplotlib is installed (:mod:`.plots`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

from ..atomic import atomic_write_bytes
from ..config import LowRankConfig
from .config import NO_STAGE, SweepConfig, parse_stage
from .stats import Arm, by, fmt, fmt_pm, mean_sd, memory_reduction, paired_diff, points, report_arms, series

REPORT = "report.md"
RULE = ("**Memory reduction** = the largest ratio B / M of a baseline's embedding bytes B to MLET's M ≤ B, over the "
        "measured sizes only (never interpolated), such that MLET's mean test AUC at M is ≥ the baseline's mean test "
        "AUC at B (ties count); 1.0× means MLET matches only at equal size, \"none\" that it never matches.")
STATS = ("Means are over seeds; ± is the sample standard deviation (ddof = 1) over seeds. Arms are compared by "
         "**paired** per-seed differences (same data split, same seed); a difference is *beyond noise* when "
         "|mean| > t(0.975, n−1) · sd / √n (two-sided paired t-test at 5 %; needs ≥ 2 seeds).")
Row = dict[str, Any]


def _table(header: Sequence[str], lines: Sequence[Sequence[str]]) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return out + ["| " + " | ".join(str(c) for c in line) + " |" for line in lines]


def comparisons(cfg: SweepConfig) -> list[tuple[Arm, Arm]]:
    """(MLET arm, baseline arm) pairs: MLET vs the paper baseline, and with tuning the tuned arms too."""
    arms = {a.label: a for a in report_arms(cfg.ks, cfg.tune_baseline)}
    out = []
    for k in cfg.ks:
        out.append((arms[f"MLET k={k}"], arms["paper baseline"]))
        if cfg.tune_baseline:
            out.append((arms[f"MLET k={k} tuned"], arms["tuned baseline"]))
            out.append((arms[f"MLET k={k}"], arms["tuned baseline"]))
    return out


def _noise(p: dict[str, Any]) -> str:
    return {None: "n/a (1 seed)", True: "yes", False: "no"}[p["beyond_noise"]]


def table3(rows: Sequence[Row], cfg: SweepConfig) -> list[str]:
    """Memory reduction at equal quality (Table 3 analogue), per model and comparison."""
    lines = []
    for model in cfg.models:
        for m_arm, b_arm in comparisons(cfg):
            bs, ms = series(rows, b_arm, model), series(rows, m_arm, model)
            red = memory_reduction(points(bs), points(ms))
            cons = memory_reduction(points(bs), points(ms), conservative=True)
            if red is None:
                lines.append([model, f"{m_arm.label} vs {b_arm.label}", "none", "-", "-", "-", "-", "-"])
                continue
            p = paired_diff(ms[red.mlet.dim], bs[red.base.dim], "auc")
            ll = paired_diff(ms[red.mlet.dim], bs[red.base.dim], "logloss")
            cons_s = "none" if cons is None else f"{cons.ratio:.2f}×"
            lines.append([model, f"{m_arm.label} vs {b_arm.label}", f"{red.ratio:.2f}×",
                          f"d={red.mlet.dim} ({red.mlet.bytes:,.0f} B) vs d={red.base.dim} ({red.base.bytes:,.0f} B)",
                          f"{fmt_pm(p['mean'], p['sd'], signed=True)} (n={p['n']})", _noise(p),
                          fmt_pm(ll["mean"], ll["sd"], signed=True), cons_s])
    return _table(["model", "comparison", "reduction", "MLET size vs baseline size", "paired ΔAUC",
                   "beyond noise", "paired ΔLogLoss", "conservative rule"], lines)


def table4(rows: Sequence[Row], cfg: SweepConfig) -> tuple[list[str], list[str]]:
    """Set A vs Set B gains of MLET over each baseline at equal d (Table 4 analogue), and the LogLoss flags."""
    lines, flags = [], []
    for model in cfg.models:
        for m_arm, b_arm in comparisons(cfg):
            bs, ms = series(rows, b_arm, model), series(rows, m_arm, model)
            for d in cfg.dims:
                if d not in bs or d not in ms:
                    continue
                ds = {k: paired_diff(ms[d], bs[d], k) for k in
                      ("auc", "logloss", "logloss_cal", "set_a_pr_auc", "set_b_pr_auc", "set_a_auc", "set_b_auc")}
                lines.append([model, f"{m_arm.label} vs {b_arm.label}", d] + [
                    fmt_pm(ds[k]["mean"], ds[k]["sd"], signed=True) + (" *" if ds[k]["beyond_noise"] else "") for k in
                    ("auc", "logloss", "logloss_cal", "set_a_pr_auc", "set_b_pr_auc", "set_a_auc", "set_b_auc")])
                if (ds["auc"]["mean"] or 0) > 0 and (ds["logloss"]["mean"] or 0) > 0:
                    cal = ds["logloss_cal"]["mean"]
                    tail = "" if cal is None else f" (calibrated: {cal:+.4f})"
                    flags.append(f"- {model}, d={d}, {m_arm.label} vs {b_arm.label}: AUC {ds['auc']['mean']:+.4f} "
                                 f"but LogLoss {ds['logloss']['mean']:+.4f} (worse){tail}")
    head = ["model", "comparison", "d", "ΔAUC", "ΔLogLoss", "ΔLogLoss cal.", "ΔSet A PR-AUC", "ΔSet B PR-AUC",
            "ΔSet A AUC", "ΔSet B AUC"]
    return _table(head, lines), flags


def svd_stages(cfg: SweepConfig) -> list[str]:
    """The stage strings made of truncated SVD only."""
    return [s for s in cfg.stages if all(isinstance(c, LowRankConfig) for c in parse_stage(s))]


#: Table 5 pairs an SVD-compressed baseline with an MLET size whose bytes are within this factor.
SAME_BYTES = 1.25


def table5(rows: Sequence[Row], cfg: SweepConfig) -> list[str]:
    """MLET at d vs truncated SVD of the baseline at (nearly) the same bytes (Table 5 analogue).

    Each SVD-only stage of each baseline size that made it smaller is paired with the MLET size (no stage)
    whose embedding bytes are closest, if within a factor :data:`SAME_BYTES`; the tuned baseline is paired
    with tuned MLET.
    """
    lines = []
    arms = report_arms(cfg.ks, cfg.tune_baseline)
    for model in cfg.models:
        for stage in svd_stages(cfg):
            for b_arm in (a for a in arms if a.arm == "single"):
                bs = series(rows, b_arm, model, stage)
                full = {p.dim: p.bytes for p in points(series(rows, b_arm, model))}
                for pt in (p for p in points(bs) if p.bytes < full.get(p.dim, 0)):  # SVD that shrank the table
                    for m_arm in (a for a in arms if a.arm == "mlet" and a.tuned == b_arm.tuned):
                        ms = series(rows, m_arm, model)
                        near = [q for q in points(ms) if 1 / SAME_BYTES <= q.bytes / pt.bytes <= SAME_BYTES]
                        if not near:
                            continue
                        q = min(near, key=lambda q: abs(q.bytes / pt.bytes - 1))
                        p = paired_diff(ms[q.dim], bs[pt.dim], "auc")
                        lines.append([model, f"{b_arm.label} d={pt.dim} {stage}", f"{pt.bytes:,.0f}", fmt(pt.value),
                                      f"{m_arm.label} d={q.dim}", f"{q.bytes:,.0f}", fmt(q.value),
                                      fmt_pm(p["mean"], p["sd"], signed=True), _noise(p)])
    if not lines:
        return [f"(no SVD-compressed baseline within {SAME_BYTES}× of the bytes of a measured MLET size)"]
    return _table(["model", "baseline + SVD", "bytes", "AUC", "MLET (no stage)", "bytes", "AUC", "paired ΔAUC",
                   "beyond noise"], lines)


def stage_table(rows: Sequence[Row], cfg: SweepConfig) -> list[str]:
    """Mean ± sd of AUC and LogLoss per model, stage, arm and d (the numbers behind Figs 5 and 8)."""
    lines = []
    cal = cfg.calibrate
    for model in cfg.models:
        for ratio in (None, *cfg.hash_ratios):
            for stage in (NO_STAGE, *cfg.stages):
                for arm in report_arms(cfg.ks, cfg.tune_baseline):
                    for d, by_seed in sorted(series(rows, arm, model, stage, ratio).items()):
                        rs = list(by_seed.values())
                        cells = [fmt_pm(*mean_sd(r[k] for r in rs)[:2]) for k in ("auc", "logloss")]
                        if cal:
                            cells.append(fmt_pm(*mean_sd(r["logloss_cal"] for r in rs)[:2]))
                        b = mean_sd(r["emb_bytes"] for r in rs)[0]
                        label = stage + (f" (hash×{ratio:g})" if ratio else "")
                        lines.append([model, label, arm.label, d, f"{b:,.0f}", *cells, len(rs)])
    head = ["model", "stage", "arm", "d", "emb bytes", "test AUC", "LogLoss"] + (["LogLoss cal."] if cal else [])
    return _table(head + ["seeds"], lines)


def _errors(rows: Sequence[Row]) -> list[str]:
    """Cells whose training diverged (grouped by variant) and stages some cells refused (one reason each)."""
    diverged: dict[str, list[int]] = {}
    refused: dict[str, str] = {}
    for r in by(rows, lambda r: bool(r.get("error"))):
        if r["error"].startswith("training diverged"):
            if r["stage"] == NO_STAGE:
                diverged.setdefault(f"{r['model']} {r['variant']}", []).append(r["seed"])
        else:
            refused.setdefault(r["stage"], r["error"])
    out = [f"- training diverged (loss NaN/Inf; the cell is never a tuned pick): {v}, seed(s) "
           f"{', '.join(map(str, sorted(s)))}" for v, s in diverged.items()]
    return out + [f"- stage `{s}` refused on some cells: {e}" for s, e in refused.items()]


def _header(rows: Sequence[Row], cfg: SweepConfig) -> list[str]:
    data = Path(cfg.data.path).name if cfg.data.path else f"synthetic ({(cfg.data.synthetic or {}).get('num_rows', 200000):,} rows)"
    cells = len({(r["model"], r["variant"], r["seed"]) for r in rows})
    return [
        "# Sweep report", "",
        f"Data: `{data}` (format {cfg.data.format}, split seed {cfg.data.seed}). Models: {', '.join(cfg.models)}; "
        f"d ∈ {list(cfg.dims)}; MLET k ∈ {list(cfg.ks)}; seeds {list(cfg.seeds)}; "
        f"tuned arms: {'emb-lr ×' + ', ×'.join(f'{m:g}' for m in cfg.emb_lr_mults) if cfg.tune_baseline else 'no'}; "
        f"stages: {', '.join(cfg.stages) or 'none'}; hash ratios: {list(cfg.hash_ratios) or 'none'}; "
        f"epochs ≤ {cfg.epochs}, patience {cfg.patience}, epoch selected on validation {cfg.select}; "
        f"calibration: {'one temperature fitted on validation' if cfg.calibrate else 'off'}. {cells} trained cells.",
        "",
        "Arms: *paper baseline* = single-layer at the paper's learning rate; *tuned baseline* = single-layer with "
        "the embedding-lr multiplier that is best on validation per (model, d, seed); *MLET k* = MLET at the "
        "paper's learning rate; *MLET k tuned* = MLET with the same tuning budget (multipliers on its table and "
        "projection, best on validation). Δ = MLET − baseline; for LogLoss lower is better.",
        "", STATS, "",
    ]


def report_markdown(rows: Sequence[Row], cfg: SweepConfig, figures: Sequence[str] = ()) -> str:
    """The whole ``report.md`` text."""
    t4, flags = table4(rows, cfg)
    out = _header(rows, cfg)
    out += ["## Memory reduction at equal quality (Table 3 analogue)", "", RULE,
            "The conservative rule compares with the best baseline AUC at any measured size ≤ B.", ""]
    out += table3(rows, cfg) + [""]
    out += ["## Gains on frequent (Set A) and rare (Set B) samples (Table 4 analogue)", "",
            "Set A / Set B = the 10 % of test samples with the most / least frequent categories. Equal d; "
            "paired Δ = MLET − baseline, mean ± sd over seeds; * = beyond the paired seed noise.", ""]
    out += t4 + [""]
    out += ["### AUC gains that come with a LogLoss loss", ""]
    out += flags or ["(none)"]
    out += ["", "## MLET vs truncated SVD of the baseline (Table 5 analogue)", "",
            f"Each SVD-compressed baseline checkpoint against the MLET size (uncompressed) with the closest embedding "
            f"bytes, when within {SAME_BYTES}× (SVD stages that did not shrink the table, e.g. rank = d, are left out).",
            ""]
    out += table5(rows, cfg) + [""]
    out += ["## Quality per stage, arm and size", ""] + stage_table(rows, cfg) + [""]
    errs = _errors(rows)
    if errs:
        out += ["Rows not measured (left out of every table above):", ""] + errs + [""]
    if figures:
        out += ["## Figures", ""] + [f"![{f}]({f})" for f in figures] + [""]
    return "\n".join(out)


def write_report(rows: Sequence[Row], cfg: SweepConfig, out: Path) -> tuple[list[Path], list[str]]:
    """Write ``report.md`` and (with matplotlib) the figures into ``out``.

    Returns:
        ``(files written, notes)``; a note says how to get the plots when matplotlib is missing.
    """
    from .plots import PLOTS_HINT, have_matplotlib, write_figures

    files: list[Path] = []
    notes: list[str] = []
    if have_matplotlib():
        files = write_figures(rows, cfg, out)
    else:
        notes.append(PLOTS_HINT)
    text = report_markdown(rows, cfg, [f.name for f in files])
    atomic_write_bytes(out / REPORT, text.encode())
    return [out / REPORT, *files], notes


__all__ = ["REPORT", "RULE", "STATS", "comparisons", "table3", "table4", "table5", "stage_table",
           "report_markdown", "write_report"]
