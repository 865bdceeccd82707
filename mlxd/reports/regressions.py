"""Speed changes larger than the measured noise, between mlx / mlx-lm versions on a machine.

Runs of the same model at the same benchmark point on the same machine are grouped by the
software they ran with (mlx, mlx-lm). Consecutive groups (in time) are compared the way
``mlxd results --compare`` compares two sides: the trials are pooled and a change counts only
when the two 95% confidence intervals do not overlap.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from mlxd.catalog.read import Reader, ResultFilter
from mlxd.jobs.choices import BENCH_POINT_KEYS as POINT_FIELDS
from mlxd.reports.data import load_models, parse_ts
from mlxd.stats import Summary, means_differ, pool, ratio_of_means

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

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model, "host": self.host, **self.point, "metric": self.metric,
            "kind": self.kind, "before": self.before, "after": self.after,
            "before_mean": self.a.mean, "before_ci95": _finite(self.a.ci95), "before_n": self.a.n,
            "after_mean": self.b.mean, "after_ci95": _finite(self.b.ci95), "after_n": self.b.n,
            "ratio": self.ratio, "ratio_ci95": _finite(self.ratio_ci95),
            "change_pct": round(self.change_pct, 2), "verdict": self.verdict,
            "when": self.when.isoformat() if self.when else None,
        }  # fmt: skip


def _finite(x: float) -> float | None:
    return None if x != x else x


@dataclass
class _Group:
    versions: tuple[str, str]
    first_at: str
    runs: list[tuple]  # (id, created_at, trials, gen mean, gen std, prompt mean, prompt std)


def _summary(runs: Sequence[tuple], metric: str) -> Summary | None:
    i = 3 if metric == "generation_tps" else 5
    groups = [(r[2], r[i], r[i + 1] or 0.0) for r in runs if r[i] is not None and r[2]]
    return pool(groups) if groups else None


def find_changes(
    reader: Reader,
    *,
    models: Sequence[str] = (),
    since: datetime | None = None,
    machines: Sequence[str] = (),
    only_slower: bool = False,
) -> list[Change]:
    """Every change beyond the noise, oldest first."""
    con = reader.con
    where, params = reader._where(ResultFilter(models=tuple(models), since=since,
                                             machines=tuple(machines)))  # fmt: skip
    pcols = ", ".join(f"r.{c}" for c in POINT_FIELDS)
    q = (
        f"select r.model_id, s.host, {pcols}, s.mlx_version, s.mlx_lm_version, r.id, "
        "r.created_at, r.trials, r.generation_tps_mean, r.generation_tps_std, "
        "r.prompt_tps_mean, r.prompt_tps_std from benchrun r join system s on s.id = r.system_id"
        f" {where} order by r.id"
    )
    n = len(POINT_FIELDS)
    series: dict[tuple, dict[tuple[str, str], _Group]] = {}
    for row in con.execute(q, params):
        key = (row[0], row[1], tuple(row[2 : 2 + n]))
        versions = (row[2 + n], row[3 + n])
        run = tuple(row[4 + n :])
        groups = series.setdefault(key, {})
        g = groups.get(versions)
        if g is None:
            g = groups[versions] = _Group(versions, run[1], [])
        g.runs.append(run)
    names = {m.id: m.name for m in load_models(con).values()}
    out: list[Change] = []
    for (model_id, host, point), groups in series.items():
        ordered = sorted(groups.values(), key=lambda g: g.first_at)
        ctx = (names.get(model_id, str(model_id)), host,
               dict(zip(POINT_FIELDS, point, strict=True)))  # fmt: skip
        for before, after in zip(ordered, ordered[1:], strict=False):
            out += _compare(ctx, "version", _label(before.versions), _label(after.versions),
                            before.runs, after.runs, after.runs[0][1])  # fmt: skip
    if only_slower:
        out = [c for c in out if c.verdict == "slower"]
    out.sort(key=lambda c: (c.when is None, c.when or 0, c.model, c.host))
    return out


def _label(versions: tuple[str, str]) -> str:
    return f"mlx {versions[0]} / mlx-lm {versions[1]}"


def _compare(ctx, kind, before_label, after_label, before, after, when_text) -> list[Change]:
    model, host, point = ctx
    out = []
    for metric, _ in METRICS:
        a, b = _summary(before, metric), _summary(after, metric)
        if a is None or b is None:
            continue
        if not means_differ(a, b):  # None (too few trials) or within the noise
            continue
        ratio, ci = ratio_of_means(a, b)
        out.append(Change(model, host, point, metric, kind, before_label, after_label, a, b,
                          ratio, ci, "faster" if b.mean > a.mean else "slower",
                          parse_ts(when_text)))  # fmt: skip
    return out
