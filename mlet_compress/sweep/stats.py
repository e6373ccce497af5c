"""The statistics of the report: arms, seed means, paired differences and the memory-reduction rule.

* Means are over seeds; spreads are the **sample** standard deviation (``ddof = 1``) over seeds.
* Two arms are compared through their **paired** per-seed differences (the same seed and data split);
  a difference is *beyond the seed noise* when ``|mean| > t(0.975, n-1) · sd / √n`` (a two-sided paired
  t-test at 5 %), which needs at least two seeds.
* :func:`memory_reduction` is the paper's Table 3 rule on measured points only (never interpolated).

Example:
    >>> p = paired([0.01, 0.02, 0.03])
    >>> round(p["mean"], 12), round(p["sd"], 12), p["beyond_noise"]     # 0.02 > 4.303 * 0.01 / sqrt(3)
    (0.02, 0.01, False)
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Optional, Sequence

#: Two-sided 95 % quantiles of Student's t for 1..30 degrees of freedom (beyond: the normal 1.96).
T975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145, 2.131,
        2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042)

Row = dict[str, Any]


def mean_sd(values: Iterable[Optional[float]]) -> tuple[Optional[float], Optional[float], int]:
    """``(mean, sample sd, n)`` of the non-None values (sd None below two values; mean None without values)."""
    vals = [float(v) for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]
    if not vals:
        return None, None, 0
    return statistics.fmean(vals), (statistics.stdev(vals) if len(vals) > 1 else None), len(vals)


def paired(diffs: Sequence[float]) -> dict[str, Any]:
    """Mean, sample sd and the paired t-test verdict of per-seed differences.

    Returns:
        ``{"n", "mean", "sd", "beyond_noise"}`` (``beyond_noise`` None with fewer than two pairs).

    Example:
        >>> paired([0.001, -0.002, 0.0015])["beyond_noise"]
        False
    """
    mean, sd, n = mean_sd(diffs)
    if n < 2 or sd is None:
        return {"n": n, "mean": mean, "sd": sd, "beyond_noise": None}
    t = T975[n - 2] if n - 1 <= len(T975) else 1.96
    return {"n": n, "mean": mean, "sd": sd, "beyond_noise": abs(mean) > t * sd / math.sqrt(n)}


@dataclass(frozen=True)
class Arm:
    """A line of the report: which rows of a (model, d, seed) it takes.

    Attributes:
        label: ``paper baseline``, ``tuned baseline``, ``MLET k=64``, ``MLET k=64 tuned``.
        arm: ``single`` or ``mlet``. k: MLET k (0 for single). tuned: the validation pick among the
            lr multipliers (else the ×1 cell).
    """

    label: str
    arm: str
    k: int
    tuned: bool

    def takes(self, r: Row) -> bool:
        """Whether row ``r`` belongs to this arm."""
        if r["arm"] != self.arm or r["k"] != self.k:
            return False
        return bool(r["best_on_val"]) if self.tuned else r["emb_lr_mult"] == 1.0


def report_arms(ks: Sequence[int], tuned: bool) -> list[Arm]:
    """The arms of a sweep: the paper baseline, MLET per k, and their tuned picks when tuning."""
    out = [Arm("paper baseline", "single", 0, False)]
    if tuned:
        out.append(Arm("tuned baseline", "single", 0, True))
    for k in ks:
        out.append(Arm(f"MLET k={k}", "mlet", k, False))
        if tuned:
            out.append(Arm(f"MLET k={k} tuned", "mlet", k, True))
    return out


def series(rows: Sequence[Row], arm: Arm, model: str, stage: str = "none",
           hash_ratio: Optional[float] = None) -> dict[int, dict[int, Row]]:
    """``{d: {seed: row}}`` of one arm (measured rows only: rows with an ``error`` are left out)."""
    out: dict[int, dict[int, Row]] = {}
    for r in rows:
        if r["model"] == model and r["stage"] == stage and r["hash_ratio"] == hash_ratio and not r.get("error") \
                and arm.takes(r):
            out.setdefault(r["dim"], {})[r["seed"]] = r
    return out


@dataclass(frozen=True)
class Point:
    """One measured size of an arm: embedding bytes and the seed mean of a metric."""

    dim: int
    bytes: float
    value: float


def points(s: dict[int, dict[int, Row]], key: str = "auc") -> list[Point]:
    """The arm's :class:`Point` per d (mean over seeds of ``key`` and of the bytes)."""
    out = []
    for d, by_seed in sorted(s.items()):
        v, _, n = mean_sd(r[key] for r in by_seed.values())
        b, _, _ = mean_sd(r["emb_bytes"] for r in by_seed.values())
        if n and b is not None:
            out.append(Point(d, b, v))
    return out


@dataclass(frozen=True)
class Reduction:
    """The result of :func:`memory_reduction`: ``ratio = base.bytes / mlet.bytes`` at the chosen pair."""

    ratio: float
    base: Point
    mlet: Point


def memory_reduction(base: Sequence[Point], mlet: Sequence[Point], *, conservative: bool = False) -> Optional[Reduction]:
    """The largest measured ratio of baseline bytes to MLET bytes at which MLET's mean AUC ≥ the baseline's.

    Every pair (baseline size B, MLET size M ≤ B) with ``AUC_MLET(M) >= AUC_base(B)`` qualifies (ties
    qualify); the result is the pair with the largest ``B / M`` (then the larger AUC margin, then the
    smaller M). Only measured sizes are compared: nothing is interpolated, and no monotonicity is assumed.
    ``conservative=True`` compares against the best baseline AUC at *any* measured size ≤ B, so a dip of
    the baseline curve at B cannot create a reduction that a smaller baseline would refute.

    Args:
        base: the baseline's points (bytes, mean AUC).
        mlet: MLET's points.
        conservative: use the baseline's running maximum over sizes ≤ B.

    Returns:
        The :class:`Reduction`, or None when MLET matches the baseline at no size ≤ its own
        (``ratio == 1.0`` means: it matches only at equal size, i.e. no reduction).

    Example:
        >>> b = [Point(4, 400, 0.70), Point(8, 800, 0.72)]
        >>> m = [Point(4, 400, 0.72), Point(8, 800, 0.73)]
        >>> memory_reduction(b, m).ratio
        2.0
    """
    best: Optional[tuple] = None
    for bp in base:
        ref = max((q.value for q in base if q.bytes <= bp.bytes), default=bp.value) if conservative else bp.value
        for mp in mlet:
            if mp.bytes <= bp.bytes and mp.value >= ref:
                key = (bp.bytes / mp.bytes, mp.value - ref, -mp.bytes)
                if best is None or key > best[0]:
                    best = (key, bp, mp)
    if best is None:
        return None
    return Reduction(best[0][0], best[1], best[2])


def paired_diff(a: dict[int, Row], b: dict[int, Row], key: str) -> dict[str, Any]:
    """:func:`paired` of ``a[seed][key] - b[seed][key]`` over the seeds both have (values not None)."""
    diffs = [a[s][key] - b[s][key] for s in sorted(set(a) & set(b))
             if a[s].get(key) is not None and b[s].get(key) is not None]
    return paired(diffs)


def fmt(v: Optional[float], digits: int = 4, signed: bool = False) -> str:
    """A number for the tables (``-`` for None)."""
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    return f"{v:+.{digits}f}" if signed else f"{v:.{digits}f}"


def fmt_pm(mean: Optional[float], sd: Optional[float], digits: int = 4, signed: bool = False) -> str:
    """``mean ± sd`` (``mean`` alone without a spread)."""
    if mean is None:
        return "-"
    return fmt(mean, digits, signed) + ("" if sd is None else f" ± {sd:.{digits}f}")


def by(rows: Sequence[Row], pred: Callable[[Row], bool]) -> list[Row]:
    """The rows satisfying ``pred``."""
    return [r for r in rows if pred(r)]


__all__ = ["T975", "mean_sd", "paired", "Arm", "report_arms", "series", "Point", "points", "Reduction",
           "memory_reduction", "paired_diff", "fmt", "fmt_pm", "by"]
