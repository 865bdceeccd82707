"""Speed changes larger than the measured noise, between mlx / mlx-lm versions on a machine.

Runs of the same model at the same benchmark point on the same machine are grouped by the
software they ran with (mlx, mlx-lm). Consecutive groups (in time) are compared the way
``mlxd results --compare`` compares two sides: the trials are pooled and a change counts only
when the two 95% confidence intervals do not overlap.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from mlxd.catalog.read import Reader, ResultFilter
from mlxd.reports.data import load_models, parse_ts
from mlxd.vocab.choices import BENCH_POINT_KEYS as POINT_FIELDS
from mlxd.vocab.stats import Summary, means_differ, ratio_of_means, t95

METRICS = (("generation_tps", "generation tok/s"), ("prompt_tps", "prompt tok/s"))


@dataclass(frozen=True)
class Change:
    model: str
    host: str
    point: dict[str, Any]
    metric: str
    kind: str  # "version": between two software versions on one machine
    before: str  # "mlx 0.30.0 / mlx-lm 0.28.0" or "runs 12-15"
    after: str
    a: Summary
    b: Summary
    ratio: float  # after / before
    ratio_ci95: float
    verdict: str  # "slower" | "faster"
    when: datetime | None  # the first run after the change

    @property
    def change_pct(self) -> float:
        return (self.ratio - 1) * 100

    # The keys of to_dict, in order (a CSV of no changes still has its header).
    FIELDS = (
        *("model", "host", *POINT_FIELDS, "metric", "kind", "before", "after"),
        *("before_mean", "before_ci95", "before_n", "after_mean", "after_ci95", "after_n"),
        *("ratio", "ratio_ci95", "change_pct", "verdict", "when"),
    )

    def to_dict(self) -> dict[str, Any]:
        values = (
            *(self.model, self.host, *(self.point[k] for k in POINT_FIELDS)),
            *(self.metric, self.kind, self.before, self.after),
            *(self.a.mean, _finite(self.a.ci95), self.a.n),
            *(self.b.mean, _finite(self.b.ci95), self.b.n),
            *(self.ratio, _finite(self.ratio_ci95), round(self.change_pct, 2), self.verdict),
            self.when.isoformat() if self.when else None,
        )
        return dict(zip(self.FIELDS, values, strict=True))


def _finite(x: float) -> float | None:
    return None if x != x else x


@dataclass
class _Group:
    """One model at one point on one machine with one mlx / mlx-lm: its runs pooled."""

    versions: tuple[str, str]
    first_at: str
    summaries: dict[str, Summary]


def _pooled(n: int | None, s1: float | None, s2: float | None) -> Summary | None:
    """The Summary of pooled trials from their count, sum and sum of squares (as
    ``stats.pool``, computed from SQL aggregates so 100,000 runs stay a few thousand rows)."""
    if not n or s1 is None or s2 is None:
        return None
    mean = s1 / n
    var = max(s2 - n * mean * mean, 0.0) / (n - 1) if n > 1 else 0.0
    std = math.sqrt(var)
    ci = t95(n - 1) * std / math.sqrt(n) if n > 1 else math.nan
    return Summary(n=n, mean=mean, median=math.nan, std=std, ci95=ci)


def find_changes(
    reader: Reader,
    *,
    models: Sequence[str] = (),
    since: datetime | None = None,
    machines: Sequence[str] = (),
    only_slower: bool = False,
) -> list[Change]:
    """Every change beyond the noise, oldest first."""
    rows = reader.version_groups(
        ResultFilter(models=tuple(models), since=since, machines=tuple(machines)),
        [metric for metric, _ in METRICS],
    )
    n = len(POINT_FIELDS)
    series: dict[tuple, list[_Group]] = {}
    for row in rows:
        key = (row[0], row[1], tuple(row[2 : 2 + n]))
        versions, first_at, sums = (row[2 + n], row[3 + n]), row[4 + n], row[5 + n :]
        summaries = {}
        for i, (metric, _) in enumerate(METRICS):
            summary = _pooled(*sums[3 * i : 3 * i + 3])
            if summary is not None:
                summaries[metric] = summary
        series.setdefault(key, []).append(_Group(versions, first_at, summaries))
    names = {m.id: m.name for m in load_models(reader).values()}
    out: list[Change] = []
    for (model_id, host, point), groups in series.items():
        ordered = sorted(groups, key=lambda g: parse_ts(g.first_at))
        ctx = (
            names.get(model_id, str(model_id)),
            host,
            dict(zip(POINT_FIELDS, point, strict=True)),
        )
        for before, after in zip(ordered, ordered[1:], strict=False):
            out += _compare(ctx, before, after)
    if only_slower:
        out = [c for c in out if c.verdict == "slower"]
    out.sort(key=lambda c: (c.when is None, c.when or 0, c.model, c.host))
    return out


def _label(versions: tuple[str, str]) -> str:
    return f"mlx {versions[0]} / mlx-lm {versions[1]}"


def _compare(ctx, before: _Group, after: _Group) -> list[Change]:
    model, host, point = ctx
    out = []
    for metric, _ in METRICS:
        a, b = before.summaries.get(metric), after.summaries.get(metric)
        if a is None or b is None:
            continue
        if not means_differ(a, b):  # None (too few trials) or within the noise
            continue
        ratio, ci = ratio_of_means(a, b)
        out.append(
            Change(
                model,
                host,
                point,
                metric,
                "version",
                _label(before.versions),
                _label(after.versions),
                a,
                b,
                ratio,
                ci,
                "faster" if b.mean > a.mean else "slower",
                parse_ts(after.first_at),
            )
        )
    return out
