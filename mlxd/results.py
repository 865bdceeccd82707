"""Benchmark results straight from the catalog file: filters, comparisons, roofline.

`mlxd results` must answer in a few tenths of a second on a catalog with 100,000 runs, and
`import sqlmodel` alone costs a third of that. So this module reads with the stdlib
``sqlite3`` module only; the Store (sqlmodel, alembic) is opened just once, to migrate, when
the file's schema revision is not the one this code knows. For ``--json`` SQLite itself
builds each row's JSON text (``json_object``): Python never touches the values.
"""

from __future__ import annotations

import json
import math
import re
import sqlite3
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from mlxd.catalog.schema import HEAD_REVISION, current_revision
from mlxd.config import Paths
from mlxd.stats import Summary, means_differ, pool, ratio_of_means


class ResultsError(ValueError):
    """A bad filter or reference; the message is one line a user can act on."""


def connect(paths: Paths) -> sqlite3.Connection:
    """A read-only connection to the catalog, migrated first if its schema is behind."""
    db = paths.catalog_db
    if current_revision(db) != HEAD_REVISION:
        from mlxd.catalog.store import Store  # slow imports, paid only when migrating

        Store(paths).close()
    con = sqlite3.connect(db, timeout=30)
    con.execute("pragma query_only = 1")
    return con


# -- result rows ---------------------------------------------------------------------------

# The quantization as one short label: the recipe, a microscaling mode, "4bit-g64", or the
# dtype of an unquantized model.
_QUANT = (
    "coalesce(m.quant_recipe, case when m.quant_mode != 'affine' then m.quant_mode end, "
    "case when m.quant_bits is not null then m.quant_bits || 'bit-g' || m.quant_group_size end, "
    "m.dtype)"
)
# Batched runs report tok/s summed over the batch, but each decoding step reads the weights
# once for the whole batch: bytes read per second = weights x (tok/s / batch).
_ROOFLINE = (
    "round(r.model_memory_bytes * r.generation_tps_mean / r.batch_size "
    "/ nullif(p.memory_bandwidth_bytes_per_s, 0) * 100, 2)"
)


def _ci(name: str) -> str:
    # bench jobs from before the ci95 columns kept the half-widths in details
    return f"coalesce(r.{name}, json_extract(r.details, '$.{name}'))"


# What makes two runs the same benchmark point (bench.Spec's grid dimensions).
POINT_FIELDS = (
    "prompt_tokens",
    "gen_tokens",
    "batch_size",
    "depth",
    "kv_bits",
    "prefill_step_size",
)

# (output name, SQL expression): one list serves the Python rows and the JSON text, so the
# two outputs cannot drift apart.
COLUMNS: list[tuple[str, str]] = [
    ("run_id", "r.id"),
    ("job_id", "r.job_id"),
    ("model", "m.name"),
    ("model_id", "m.id"),
    ("quantization", _QUANT),
    ("bits_per_weight", "m.bits_per_weight"),
    ("model_size_bytes", "m.size_bytes"),
    ("system_id", "r.system_id"),
    ("created_at", "replace(r.created_at, ' ', 'T') || '+00:00'"),
    *[
        (c, f"r.{c}")
        for c in (
            *POINT_FIELDS,
            "trials",
            "warmup",
            "seed",
            "load_time_s",
            "prompt_tps_mean",
            "prompt_tps_median",
            "prompt_tps_std",
            "generation_tps_mean",
            "generation_tps_median",
            "generation_tps_std",
            "ttft_s_mean",
            "ttft_s_median",
            "ttft_s_std",
        )
    ],  # fmt: skip
    ("prompt_tps_ci95", _ci("prompt_tps_ci95")),
    ("generation_tps_ci95", _ci("generation_tps_ci95")),
    ("ttft_s_ci95", _ci("ttft_s_ci95")),
    ("noisy", "r.noisy"),
    *[
        (c, f"r.{c}")
        for c in (
            "peak_memory_bytes",
            "active_memory_bytes",
            "cache_memory_bytes",
            "peak_rss_bytes",
            "model_memory_bytes",
            "system_available_before_bytes",
            "system_available_after_bytes",
            "power_source",
            "low_power_mode",
            "thermal_state",
        )
    ],  # fmt: skip
    ("host", "s.host"),
    ("cpu", "s.cpu"),
    ("chip", "s.chip"),
    ("backend", "s.backend"),
    ("os", "s.os_name || ' ' || s.os_version"),
    ("mlx_version", "s.mlx_version"),
    ("mlx_lm_version", "s.mlx_lm_version"),
    ("mlxd_version", "s.mlxd_version"),
    ("memory_bandwidth_bytes_per_s", "p.memory_bandwidth_bytes_per_s"),
    ("roofline_pct", _ROOFLINE),
    # Generation workloads (issue 11): batch jobs, the serving bench, drafts, prompt caches.
    *[
        (c, f"r.{c}")
        for c in (
            "mode",
            "concurrency",
            "requests",
            "errors",
            "ttft_p50_s",
            "ttft_p95_s",
            "ttft_p99_s",
            "itl_p50_s",
            "itl_p95_s",
            "itl_p99_s",
            "request_tps_mean",
            "num_draft_tokens",
            "acceptance_rate",
            "draft_speedup",
            "cached_tokens",
            "ttft_cached_s_mean",
        )
    ],  # fmt: skip
    ("draft_model", "(select name from model d where d.id = r.draft_model_id)"),
    ("prompt_cache", "(select name from promptcache c where c.id = r.prompt_cache_id)"),
]
BOOL_COLUMNS = ("noisy", "low_power_mode")

# The newest probe of each machine gives its memory bandwidth.
_FROM = """
    from benchrun r
    join model m on m.id = r.model_id
    join system s on s.id = r.system_id
    left join (
        select host, memory_bandwidth_bytes_per_s from probe
        where id in (select max(id) from probe group by host)
    ) p on p.host = s.host
"""


@dataclass(frozen=True)
class ResultFilter:
    """Which runs to show; empty fields do not filter."""

    models: tuple[str, ...] = ()  # REFs: name, id or path
    machines: tuple[str, ...] = ()  # host names
    since: datetime | None = None
    mlx_versions: tuple[str, ...] = ()
    limit: int = 0  # the newest N runs (still listed oldest first); 0: all


def _where(con: sqlite3.Connection, flt: ResultFilter) -> tuple[str, list[Any]]:
    clauses, params = [], []
    if flt.models:
        ids = [resolve_model_id(con, ref) for ref in flt.models]
        clauses.append(f"r.model_id in ({','.join('?' * len(ids))})")
        params += ids
    if flt.machines:
        _check_known(con, "host", flt.machines, "machine")
        clauses.append(f"s.host in ({','.join('?' * len(flt.machines))})")
        params += flt.machines
    if flt.mlx_versions:
        _check_known(con, "mlx_version", flt.mlx_versions, "mlx version")
        clauses.append(f"s.mlx_version in ({','.join('?' * len(flt.mlx_versions))})")
        params += flt.mlx_versions
    if flt.since is not None:
        # created_at is stored as UTC text that sorts like the time it names
        clauses.append("r.created_at >= ?")
        params.append(flt.since.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f"))
    if flt.limit:
        # The newest N matching runs; the id index makes this cheap at any catalog size.
        inner = ("where " + " and ".join(clauses)) if clauses else ""
        sub = f"select r.id {_FROM} {inner} order by r.id desc limit ?"
        return f" where r.id in ({sub})", [*params, flt.limit]
    return (" where " + " and ".join(clauses)) if clauses else "", params


def _check_known(con: sqlite3.Connection, column: str, values: Sequence[str], what: str) -> None:
    known = [r[0] for r in con.execute(f"select distinct {column} from system order by 1")]
    for v in values:
        if v not in known:
            listed = ", ".join(known) if known else "none yet"
            raise ResultsError(f"no benchmarks from {what} '{v}' in the catalog (known: {listed})")


def resolve_model_id(con: sqlite3.Connection, ref: str) -> int:
    """A model's id from its catalog name, id or folder path (as Store.resolve_model)."""
    row = con.execute("select id from model where name = ?", (ref,)).fetchone()
    if row is None and ref.isdigit():
        row = con.execute("select id from model where id = ?", (int(ref),)).fetchone()
    if row is None and ("/" in ref or ref.startswith(".")):
        path = str(Path(ref).expanduser().resolve())
        row = con.execute("select id from model where path = ?", (path,)).fetchone()
    if row is None:
        raise ResultsError(f"model '{ref}' not found; see 'mlxd models list'")
    return row[0]


def result_rows(con: sqlite3.Connection, flt: ResultFilter = ResultFilter()) -> list[dict]:
    """One dict per benchmark run (a measured point), oldest first; created_at is a datetime."""
    where, params = _where(con, flt)
    select = ", ".join(f"{expr} as {name}" for name, expr in COLUMNS)
    cur = con.execute(f"select {select} {_FROM} {where} order by r.id", params)
    names = [d[0] for d in cur.description]
    rows = []
    for values in cur:
        row = dict(zip(names, values, strict=True))
        for name in BOOL_COLUMNS:
            if row[name] is not None:
                row[name] = bool(row[name])
        row["created_at"] = datetime.fromisoformat(row["created_at"])
        rows.append(row)
    return rows


def result_json_rows(
    con: sqlite3.Connection, flt: ResultFilter = ResultFilter(), *, after_id: int = 0
) -> list[str]:
    """The same rows as JSON object texts, built by SQLite (the fast path of --json);
    only runs with an id above ``after_id``."""
    where, params = _where(con, flt)
    where, params = (where + " and " if where else " where ") + "r.id > ?", [*params, after_id]
    pairs = []
    for name, expr in COLUMNS:
        if name in BOOL_COLUMNS:
            expr = f"case when {expr} is null then null when {expr} then json('true') else json('false') end"  # noqa: E501
        pairs.append(f"'{name}', {expr}")
    sql = f"select json_object({', '.join(pairs)}) {_FROM} {where} order by r.id"
    try:
        return [row[0] for row in con.execute(sql, params)]
    except sqlite3.OperationalError as e:
        if "json" not in str(e):
            raise
        # An SQLite built without JSON functions: let Python encode.
        return [
            json.dumps(r | {"created_at": r["created_at"].isoformat()})
            for r in result_rows(con, flt)
            if r["run_id"] > after_id
        ]


def json_array(items: Sequence[str]) -> str:
    """A JSON array with one item per line: readable, greppable, and cheap to build."""
    if not items:
        return "[]"
    return "[\n  " + ",\n  ".join(items) + "\n]"


def write_results_json(con: sqlite3.Connection, flt: ResultFilter, out) -> int:
    """Write the rows as a JSON array to the binary stream ``out``; returns how many."""
    rows = result_json_rows(con, flt)
    out.write((json_array(rows) + "\n").encode())
    return len(rows)


def hidden_by_limit(con: sqlite3.Connection, flt: ResultFilter, shown: int) -> int:
    """How many matching runs --limit left out."""
    if not flt.limit or shown < flt.limit:
        return 0
    where, params = _where(con, replace(flt, limit=0))
    (total,) = con.execute(f"select count(*) {_FROM} {where}", params).fetchone()
    return max(total - shown, 0)


def result_csv_rows(con: sqlite3.Connection, flt: ResultFilter = ResultFilter()):
    """(column names, row tuples) for CSV: the values as stored, no per-row dicts."""
    where, params = _where(con, flt)
    select = ", ".join(f"{expr} as {name}" for name, expr in COLUMNS)
    cur = con.execute(f"select {select} {_FROM} {where} order by r.id", params)
    names = [d[0] for d in cur.description]
    flags = [i for i, name in enumerate(names) if name in BOOL_COLUMNS]

    def rows():
        for row in cur:
            if flags:  # SQLite stores booleans as 0/1; say True/False as --json does
                row = list(row)
                for i in flags:
                    row[i] = None if row[i] is None else bool(row[i])
            yield row

    return names, rows()


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
# What selects one side of a comparison, and what else must match for two runs to be the
# same benchmark point (comparing models: on the same machine; machines: the same model...).
_SIDE = {"model": "r.model_id = ?", "machine": "s.host = ?", "mlx": "s.mlx_version = ?"}
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
        out.update(ratio=clean(self.ratio), ratio_ci95=clean(self.ratio_ci95),
                   verdict=self.verdict)  # fmt: skip
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


def compare_by_guess(con: sqlite3.Connection, a: str, b: str) -> str:
    """What A and B name: two models first, else two machines, else two mlx versions."""

    def all_in(column: str) -> bool:
        q = f"select count(distinct {column}) from system where {column} in (?, ?)"
        return con.execute(q, (a, b)).fetchone()[0] == len({a, b})

    try:
        resolve_model_id(con, a), resolve_model_id(con, b)
        return "model"
    except ResultsError:
        pass
    if all_in("host"):
        return "machine"
    if all_in("mlx_version"):
        return "mlx"
    raise ResultsError(
        f"cannot tell what to compare: '{a}' and '{b}' are not two models, two machines "
        f"or two mlx versions in the catalog (or pass --compare-by)"
    )


def compare(
    con: sqlite3.Connection,
    a: str,
    b: str,
    by: str | None = None,
    flt: ResultFilter = ResultFilter(),
) -> Comparison:
    """B against A at every benchmark point both sides measured, metric by metric.

    A side's trials are pooled over all its runs at a point (the catalog's per-trial rows;
    a run without them counts with its recorded mean, std and trial count).
    """
    by = by or compare_by_guess(con, a, b)
    if by not in COMPARE_BY:
        raise ResultsError(f"--compare-by must be one of {', '.join(COMPARE_BY)}")
    if by == "model":
        flt = replace(flt, models=())  # the two sides are the models
    sides = {}
    sides_value_a = None
    for label, ref in (("a", a), ("b", b)):
        if by == "model":
            value: Any = resolve_model_id(con, ref)
        else:
            column = "host" if by == "machine" else "mlx_version"
            _check_known(con, column, [ref], "machine" if by == "machine" else "mlx version")
            value = ref
        sides[label] = _side_groups(con, _SIDE[by], value, _CONTEXT[by], flt)
        if label == "b" and value == sides_value_a:
            raise ResultsError(f"--compare needs two different {by}s, not '{a}' twice")
        sides_value_a = value
    rows = []
    common = [k for k in sides["a"] if k in sides["b"]]
    for key in sorted(common, key=lambda k: tuple((v is None, v) for v in k)):
        context = dict(zip(_CONTEXT[by], key[: len(_CONTEXT[by])], strict=True))
        point = dict(zip(POINT_FIELDS, key[len(_CONTEXT[by]) :], strict=True))
        for metric in METRICS:
            ga, gb = sides["a"][key].get(metric.name), sides["b"][key].get(metric.name)
            if not ga or not gb:
                continue
            sa, sb = pool(ga), pool(gb)
            ratio, ci = ratio_of_means(sa, sb)
            rows.append(ComparedMetric(context, point, metric.name, sa, sb, ratio, ci,
                                       verdict(metric, sa, sb)))  # fmt: skip
    return Comparison(
        by=by,
        a=a,
        b=b,
        rows=rows,
        unmatched_a=len(set(sides["a"]) - set(common)),
        unmatched_b=len(set(sides["b"]) - set(common)),
    )


def _side_groups(
    con: sqlite3.Connection,
    side_clause: str,
    side_value: Any,
    context: Sequence[str],
    flt: ResultFilter,
) -> dict[tuple, dict[str, list[tuple[int, float, float]]]]:
    """key (context + point) -> metric -> [(n, mean, std)]: one group per trial, or per run
    where a run has no trial rows."""
    where, params = _where(con, flt)
    where = (where + " and " if where else " where ") + side_clause
    ctx = {"model": "m.name", "host": "s.host"}
    key_cols = [ctx[c] for c in context] + [f"r.{c}" for c in POINT_FIELDS]
    sql = f"""
        select {", ".join(key_cols)}, t.id,
               t.prompt_tps, t.generation_tps, t.ttft_s, t.peak_memory_bytes,
               r.trials, r.prompt_tps_mean, r.prompt_tps_std, r.generation_tps_mean,
               r.generation_tps_std, r.ttft_s_mean, r.ttft_s_std, r.peak_memory_bytes
        {_FROM} left join benchtrial t on t.run_id = r.id
        {where}
    """
    out: dict[tuple, dict[str, list[tuple[int, float, float]]]] = {}
    nk = len(key_cols)
    for row in con.execute(sql, [*params, side_value]):
        key, rest = tuple(row[:nk]), row[nk:]
        metrics = out.setdefault(key, {})
        trial_id, tp, tg, tt, tm, n, pm, ps, gm, gs, tmn, tsd, peak = rest
        if trial_id is not None:
            groups = (("prompt_tps", tp, 0.0), ("generation_tps", tg, 0.0),
                      ("ttft_s", tt, 0.0), ("peak_memory_bytes", tm, 0.0))  # fmt: skip
            n = 1
        else:
            groups = (("prompt_tps", pm, ps), ("generation_tps", gm, gs),
                      ("ttft_s", tmn, tsd), ("peak_memory_bytes", peak, 0.0))  # fmt: skip
        for name, mean, std in groups:
            if mean is not None and n:
                metrics.setdefault(name, []).append((n, mean, std or 0.0))
    return out


def iter_compare_dicts(comparison: Comparison) -> Iterator[dict[str, Any]]:
    for row in comparison.rows:
        yield {"a": comparison.a, "b": comparison.b, "by": comparison.by, **row.to_dict()}
