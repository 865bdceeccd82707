"""Summary statistics for benchmark trials (pure Python, no numpy: the CLI uses it too)."""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass

# Two-sided 95% Student-t critical values by degrees of freedom; 1.96 beyond the table.
_T95 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306,
        9: 2.262, 10: 2.228, 11: 2.201, 12: 2.179, 13: 2.160, 14: 2.145, 15: 2.131,
        16: 2.120, 17: 2.110, 18: 2.101, 19: 2.093, 20: 2.086, 25: 2.060, 30: 2.042,
        40: 2.021, 60: 2.000, 120: 1.980}  # fmt: skip


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
