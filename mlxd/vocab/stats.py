"""Summary statistics for benchmark trials (pure Python, no numpy: the CLI uses it too)."""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass

# Two-sided 95% Student-t critical values by degrees of freedom; 1.96 beyond the table.
_T95 = {
    1: 12.706,
    2: 4.303,
    3: 3.182,
    4: 2.776,
    5: 2.571,
    6: 2.447,
    7: 2.365,
    8: 2.306,
    9: 2.262,
    10: 2.228,
    11: 2.201,
    12: 2.179,
    13: 2.160,
    14: 2.145,
    15: 2.131,
    16: 2.120,
    17: 2.110,
    18: 2.101,
    19: 2.093,
    20: 2.086,
    25: 2.060,
    30: 2.042,
    40: 2.021,
    60: 2.000,
    120: 1.980,
}


def t95(dof: int) -> float:
    if dof <= 0:
        return math.nan
    if dof in _T95:
        return _T95[dof]
    # Conservative: the value for the next smaller tabulated dof.
    smaller = [d for d in _T95 if d < dof]
    return _T95[max(smaller)] if dof < 120 else 1.96


@dataclass(frozen=True)
class Summary:
    n: int
    mean: float
    median: float
    std: float  # sample standard deviation (n-1); 0 for a single value
    ci95: float  # half-width of the 95% confidence interval of the mean; nan for n < 2

    @property
    def cv(self) -> float:
        """Coefficient of variation (std / mean)."""
        return self.std / self.mean if self.mean else math.nan


def summarize(values: Sequence[float]) -> Summary:
    vals = [float(v) for v in values]
    if not vals:
        raise ValueError("no values to summarize")
    n = len(vals)
    std = statistics.stdev(vals) if n > 1 else 0.0
    ci = t95(n - 1) * std / math.sqrt(n) if n > 1 else math.nan
    return Summary(
        n=n, mean=statistics.fmean(vals), median=statistics.median(vals), std=std, ci95=ci
    )


def pool(groups: Sequence[tuple[int, float, float]]) -> Summary:
    """One Summary from several (n, mean, std) groups, as if their values were pooled.

    Exact for mean and std (between-group spread counts as variance); the median of the
    pooled values is unknown unless every group is a single value, so it is nan otherwise.
    """
    groups = [(int(n), float(m), float(s)) for n, m, s in groups if n > 0]
    if not groups:
        raise ValueError("no values to summarize")
    if all(n == 1 for n, _, _ in groups):
        return summarize([m for _, m, _ in groups])
    total = sum(n for n, _, _ in groups)
    mean = sum(n * m for n, m, _ in groups) / total
    ss = sum((n - 1) * s * s + n * (m - mean) ** 2 for n, m, s in groups)
    std = math.sqrt(ss / (total - 1)) if total > 1 else 0.0
    ci = t95(total - 1) * std / math.sqrt(total) if total > 1 else math.nan
    return Summary(n=total, mean=mean, median=math.nan, std=std, ci95=ci)


def ratio_of_means(a: Summary, b: Summary) -> tuple[float, float]:
    """``b.mean / a.mean`` and the half-width of its 95% interval.

    The relative 95% half-widths of the two means are added in quadrature (first-order
    error propagation); nan when either side has fewer than two values.
    """
    if not a.mean:
        return math.nan, math.nan
    ratio = b.mean / a.mean
    if a.n < 2 or b.n < 2 or not b.mean:
        return ratio, math.nan
    rel = math.hypot(a.ci95 / a.mean, b.ci95 / b.mean)
    return ratio, abs(ratio) * rel


def means_differ(a: Summary, b: Summary) -> bool | None:
    """True when the 95% confidence intervals of the two means do not overlap.

    A deliberately cautious test (stricter than a t-test at 5%): a benchmark verdict should
    survive the run-to-run noise. None when either side has fewer than two values.
    """
    if a.n < 2 or b.n < 2:
        return None
    return abs(b.mean - a.mean) > a.ci95 + b.ci95


def bootstrap_ci(
    values: Sequence[float], *, resamples: int = 1000, seed: int = 0
) -> tuple[float, float]:
    """The 95% percentile-bootstrap interval of the mean of ``values`` (e.g. 0/1 scores of
    a task's items): (low, high). Seeded, so the same scores give the same interval; a
    single value (or none) has no spread: (mean, mean), or (nan, nan) when empty."""
    import random

    vals = [float(v) for v in values]
    n = len(vals)
    if n == 0:
        return math.nan, math.nan
    if n == 1 or min(vals) == max(vals):
        return vals[0], vals[0]
    rng = random.Random(seed)
    means = sorted(sum(rng.choices(vals, k=n)) / n for _ in range(resamples))
    return means[int(0.025 * (resamples - 1))], means[int(math.ceil(0.975 * (resamples - 1)))]
