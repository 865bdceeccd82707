"""Benchmark results: the --since grammar, comparisons of two sides with their verdicts.

The rows themselves come from :class:`mlxd.catalog.read.Reader` (stdlib sqlite3, fast);
this module decides what they mean. For ``--json`` SQLite itself builds each row's JSON text
(``json_object``): Python never touches the values.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from mlxd.catalog.errors import QueryError as ResultsError
from mlxd.catalog.read import Reader, ResultFilter
from mlxd.vocab.choices import BENCH_POINT_KEYS
from mlxd.vocab.stats import Summary, means_differ, pool, ratio_of_means

# -- filters from the command line -----------------------------------------------------------

_AGE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([mhdw])\s*$")
_AGE_UNITS = {"m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def parse_since(text: str, now: datetime | None = None) -> datetime:
    """``2026-01-31`` (local midnight), ``2026-01-31T08:00``, or an age: ``90m``, ``12h``,
    ``7d``, ``2w``."""
    now = now or datetime.now(UTC)
    m = _AGE.match(text)
    if m:
        try:
            return now - timedelta(**{_AGE_UNITS[m.group(2)]: float(m.group(1))})
        except OverflowError:
            raise ResultsError(f"--since {text}: that is further back than any date") from None
    try:
        dt = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ResultsError(
            f"--since takes a date (2026-01-31), a time (2026-01-31T08:00) or an age "
            f"(7d, 12h, 2w), not '{text}'"
        ) from None
    return dt if dt.tzinfo else dt.astimezone()  # naive: the user's local time


# -- comparisons --------------------------------------------------------------------------------

COMPARE_BY = ("model", "machine", "mlx")
# What else must match for two runs to be the same benchmark point (comparing models: on the
# same machine; machines: the same model...); Reader.compare_side picks each side.
_CONTEXT = {"model": ("host",), "machine": ("model",), "mlx": ("model", "host")}


@dataclass(frozen=True)
class Metric:
    name: str  # as in the result rows: prompt_tps, generation_tps, ttft_s, peak_memory_bytes
    label: str
    higher_is_better: bool
    better: str  # the verdict when B beats A
    worse: str


METRICS = (
    Metric("prompt_tps", "prompt tok/s", True, "faster", "slower"),
    Metric("generation_tps", "generation tok/s", True, "faster", "slower"),
    Metric("ttft_s", "TTFT s", False, "faster", "slower"),
    Metric("peak_memory_bytes", "peak memory bytes", False, "less memory", "more memory"),
)
NO_DIFFERENCE = "no clear difference"
TOO_FEW = "too few trials"


@dataclass(frozen=True)
class ComparedMetric:
    """One metric at one benchmark point: A, B, and what B/A says."""

    context: dict[str, Any]  # model and/or host the two sides share
    point: dict[str, Any]  # prompt_tokens, gen_tokens, batch_size, depth, kv_bits
    metric: str
    a: Summary
    b: Summary
    ratio: float  # b.mean / a.mean
    ratio_ci95: float  # half-width of the ratio's 95% interval; nan with < 2 trials a side
    verdict: str

    def to_dict(self) -> dict[str, Any]:
        def clean(x):
            return None if isinstance(x, float) and not math.isfinite(x) else x

        out = {**self.context, **self.point, "metric": self.metric}
        for side in ("a", "b"):
            s = asdict(getattr(self, side))
            out.update({f"{side}_{k}": clean(v) for k, v in s.items()})
        out.update(ratio=clean(self.ratio), ratio_ci95=clean(self.ratio_ci95), verdict=self.verdict)
        return out


@dataclass(frozen=True)
class Comparison:
    by: str  # model | machine | mlx
    a: str
    b: str
    rows: list[ComparedMetric]
    unmatched_a: int  # benchmark points measured on one side only
    unmatched_b: int


def verdict(metric: Metric, a: Summary, b: Summary) -> str:
    differ = means_differ(a, b)
    if differ is None:
        return TOO_FEW
    if not differ:
        return NO_DIFFERENCE
    b_higher = b.mean > a.mean
    return metric.better if b_higher == metric.higher_is_better else metric.worse


def compare_by_guess(reader: Reader, a: str, b: str) -> str:
    """What A and B name: two models first, else two machines, else two mlx versions."""
    if reader.find_model(a) is not None and reader.find_model(b) is not None:
        return "model"
    if reader.all_in_systems("host", (a, b)):
        return "machine"
    if reader.all_in_systems("mlx_version", (a, b)):
        return "mlx"
    raise ResultsError(
        f"cannot tell what to compare: '{a}' and '{b}' are not two models, two machines "
        f"or two mlx versions in the catalog (or pass --compare-by)"
    )


def compare(
    reader: Reader,
    a: str,
    b: str,
    by: str | None = None,
    flt: ResultFilter | None = None,
) -> Comparison:
    """B against A at every benchmark point both sides measured, metric by metric.

    A side's trials are pooled over all its runs at a point (the catalog's per-trial rows;
    a run without them counts with its recorded mean, std and trial count).
    """
    flt = flt or ResultFilter()
    by = by or compare_by_guess(reader, a, b)
    if by not in COMPARE_BY:
        raise ResultsError(f"--compare-by must be one of {', '.join(COMPARE_BY)}")
    if by == "model":
        flt = replace(flt, models=())  # the two sides are the models
    sides = {}
    sides_value_a = None
    for label, ref in (("a", a), ("b", b)):
        if by == "model":
            value: Any = reader.model(ref).id
        else:
            column = "host" if by == "machine" else "mlx_version"
            reader.check_known(column, [ref], "machine" if by == "machine" else "mlx version")
            value = ref
        sides[label] = reader.side_groups(reader.compare_side(by), value, _CONTEXT[by], flt)
        if label == "b" and value == sides_value_a:
            raise ResultsError(f"--compare needs two different {by}s, not '{a}' twice")
        sides_value_a = value
    rows = []
    common = [k for k in sides["a"] if k in sides["b"]]
    for key in sorted(common, key=lambda k: tuple((v is None, v) for v in k)):
        context = dict(zip(_CONTEXT[by], key[: len(_CONTEXT[by])], strict=True))
        point = dict(zip(BENCH_POINT_KEYS, key[len(_CONTEXT[by]) :], strict=True))
        for metric in METRICS:
            ga, gb = sides["a"][key].get(metric.name), sides["b"][key].get(metric.name)
            if not ga or not gb:
                continue
            sa, sb = pool(ga), pool(gb)
            ratio, ci = ratio_of_means(sa, sb)
            rows.append(
                ComparedMetric(
                    context, point, metric.name, sa, sb, ratio, ci, verdict(metric, sa, sb)
                )
            )
    return Comparison(
        by=by,
        a=a,
        b=b,
        rows=rows,
        unmatched_a=len(set(sides["a"]) - set(common)),
        unmatched_b=len(set(sides["b"]) - set(common)),
    )


def iter_compare_dicts(comparison: Comparison) -> Iterator[dict[str, Any]]:
    for row in comparison.rows:
        yield {"a": comparison.a, "b": comparison.b, "by": comparison.by, **row.to_dict()}


def json_array(items: Sequence[str]) -> str:
    """A JSON array with one item per line: readable, greppable, and cheap to build."""
    if not items:
        return "[]"
    return "[\n  " + ",\n  ".join(items) + "\n]"


def write_results_json(reader: Reader, flt: ResultFilter, out) -> int:
    """Write the rows as a JSON array to the binary stream ``out``; returns how many."""
    rows = reader.result_json_rows(flt)
    out.write((json_array(rows) + "\n").encode())
    return len(rows)
