"""The catalog's fast read path: every query a read command makes, on the stdlib driver.

`mlxd jobs list` is typed many times a day, and `import sqlmodel` alone costs ~0.35 s; the
SQL here needs only ``sqlite3`` (and plain SQL, so a PostgreSQL catalog can run the same
texts with its own driver). The Store (SQLModel, Alembic) is opened only to migrate, when
the file's schema revision is not the one this code knows, or to create a new catalog.

Rows come back as :class:`Row`: a dict whose keys are also attributes, with JSON columns
decoded, datetimes parsed (naive UTC; aware UTC for ``UTC_TABLES``) and booleans as ``bool``,
like the SQLModel rows the Store returns.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

from mlxd.catalog import refs
from mlxd.catalog.dialect import SQLITE, Dialect
from mlxd.catalog.errors import NotFound, QueryError
from mlxd.catalog.schema import HEAD_REVISION, current_revision
from mlxd.config import Paths
from mlxd.vocab.choices import BENCH_POINT_KEYS

PENDING_STATUSES = ("queued", "running")
# Tables whose rows come back with aware UTC timestamps, as the Store's SQLModel rows have
# them: their commands read through the Store before and print the offset ("+00:00") in
# --json. The other tables' timestamps are naive UTC, as their readers have always printed.
UTC_TABLES = frozenset(
    {"adapter", "finetunestep", "finetuneeval", "finetunesweep", "promptcache", "apiuser"}
)


def connect(paths: Paths):
    """A read-only connection to the catalog, migrated (or created) first if needed: an
    sqlite3 connection, or a PostgreSQL one that takes the same SQL (dialect.py)."""
    from mlxd.catalog.backend import database

    pg = database(paths)
    if pg.is_postgres:
        from mlxd.catalog.dialect import PostgresConnection
        from mlxd.catalog.schema import check_not_newer, postgres_revision

        revision = postgres_revision(pg)
        check_not_newer(revision, f"the catalog at {pg.host}:{pg.port}")
        if revision != HEAD_REVISION:
            from mlxd.catalog.store import Store

            Store(paths).close()
        con = pg.connect()
        con.execute("set session characteristics as transaction read only")
        con.execute("set timezone = 'UTC'")
        return PostgresConnection(con)
    db = paths.catalog_db
    if current_revision(db) != HEAD_REVISION:
        from mlxd.catalog.store import Store  # slow imports, paid only when migrating

        Store(paths).close()
    from mlxd.catalog.backend import sqlite_connect

    con = sqlite_connect(db)
    con.execute("pragma query_only = 1")
    return con


class Row(dict):
    """A catalog row: ``row["status"]`` and ``row.status`` alike."""

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None


class Rows(list):
    """The rows of one query and its column names: a list of none still has its columns
    (what a CSV header says)."""

    def __init__(self, rows=(), columns: Sequence[str] = ()):
        super().__init__(rows)
        self.columns = list(columns)


def _decoder(decl_type: str):
    t = decl_type.upper()
    if t == "JSON":
        return lambda v: json.loads(v) if isinstance(v, str) else v
    if t in ("DATETIME", "TIMESTAMP"):
        return lambda v: datetime.fromisoformat(v) if isinstance(v, str) else v
    if t == "BOOLEAN":
        return lambda v: None if v is None else bool(v)
    return None


def _columns(d: Dialect) -> list[tuple[str, str]]:
    """(output name, SQL expression) of a result row: one list serves the Python rows and the
    JSON text, so the two outputs cannot drift apart."""

    def ci(name: str) -> str:
        # bench jobs from before the ci95 columns kept the half-widths in details
        return f"coalesce(r.{name}, {d.json_number('r.details', name)})"

    return [
        (
            name,
            ci(name)
            if expr is _CI
            else d.iso_utc("r.created_at")
            if expr is _ISO_CREATED
            else d.round2(_ROOFLINE)
            if expr is _ROUNDED_ROOFLINE
            else expr,
        )
        for name, expr in _COLUMN_TEMPLATE
    ]


# mlxd.vocab.choices.quant_label in SQL ("mixed_3_6-g64", "mxfp4", "4bit-g64"), else the dtype
# of an unquantized model; tests/test_vocab.py checks every choice through both.
QUANT_LABEL = (
    "coalesce(m.quant_recipe || coalesce('-g' || m.quant_group_size, ''), "
    "case when m.quant_mode != 'affine' then m.quant_mode end, "
    "case when m.quant_bits is not null "
    "then m.quant_bits || 'bit' || coalesce('-g' || m.quant_group_size, '') end, "
    "m.dtype)"
)
# Batched runs report tok/s summed over the batch, but each decoding step reads the weights
# once for the whole batch: bytes read per second = weights x (tok/s / batch).
_ROOFLINE = (
    "r.model_memory_bytes * r.generation_tps_mean / r.batch_size "
    "/ nullif(p.memory_bandwidth_bytes_per_s, 0) * 100"
)
# A run with an unfused adapter (bench --adapter) is labelled "model+adapter".
MODEL_LABEL = "m.name || coalesce('+' || a.name, '')"
# Markers in the template for the expressions a dialect writes.
_CI, _ISO_CREATED, _ROUNDED_ROOFLINE = object(), object(), object()

_COLUMN_TEMPLATE: list[tuple[str, Any]] = [
    ("run_id", "r.id"),
    ("job_id", "r.job_id"),
    ("model", MODEL_LABEL),
    ("model_id", "m.id"),
    ("adapter", "a.name"),
    ("adapter_id", "r.adapter_id"),
    ("quantization", QUANT_LABEL),
    ("bits_per_weight", "m.bits_per_weight"),
    ("model_size_bytes", "m.size_bytes"),
    ("system_id", "r.system_id"),
    ("created_at", _ISO_CREATED),
    *[
        (c, f"r.{c}")
        for c in (
            *BENCH_POINT_KEYS,
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
    ],
    ("prompt_tps_ci95", _CI),
    ("generation_tps_ci95", _CI),
    ("ttft_s_ci95", _CI),
    ("combined_tps_mean", "r.combined_tps_mean"),
    ("combined_tps_std", "r.combined_tps_std"),
    ("combined_tps_ci95", "r.combined_tps_ci95"),
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
    ],
    # The model's newest quality run (any machine: the scores do not depend on one).
    ("perplexity", "q.perplexity"),
    ("kl_mean", "q.kl_mean"),
    ("top1_agreement", "q.top1_agreement"),
    ("quality_base", "qb.name"),
    ("quality_run_id", "q.id"),
    ("host", "s.host"),
    ("cpu", "s.cpu"),
    ("chip", "s.chip"),
    ("ram_bytes", "s.ram_bytes"),
    ("backend", "s.backend"),
    ("os", "s.os_name || ' ' || s.os_version"),
    ("python_version", "s.python_version"),
    ("mlx_version", "s.mlx_version"),
    ("mlx_lm_version", "s.mlx_lm_version"),
    ("mlxd_version", "s.mlxd_version"),
    ("memory_bandwidth_bytes_per_s", "p.memory_bandwidth_bytes_per_s"),
    ("roofline_pct", _ROUNDED_ROOFLINE),
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
    ],
    ("draft_model", "(select name from model d where d.id = r.draft_model_id)"),
    ("prompt_cache", "(select name from promptcache c where c.id = r.prompt_cache_id)"),
]
COLUMNS = _columns(SQLITE)
BOOL_COLUMNS = ("noisy", "low_power_mode")

# The newest probe of each machine gives its memory bandwidth.
_FROM = """
    from benchrun r
    join model m on m.id = r.model_id
    join system s on s.id = r.system_id
    left join adapter a on a.id = r.adapter_id
    left join (
        select host, memory_bandwidth_bytes_per_s from probe
        where id in (select max(id) from probe group by host)
    ) p on p.host = s.host
    left join qualityrun q on q.id = (
        select max(id) from qualityrun
        where model_id = r.model_id and coalesce(adapter_id, 0) = coalesce(r.adapter_id, 0)
    )
    left join model qb on qb.id = q.base_model_id
"""


# What selects one side of a comparison; models compare alone: runs with an unfused adapter
# (bench --adapter) are not the model's.
_COMPARE_SIDE = {
    "model": "r.model_id = ? and r.adapter_id is null",
    "machine": "s.host = ?",
    "mlx": "s.mlx_version = ?",
}


# The spans of a job's life that job_durations measures: (from column, to column).
_SPANS = {"wait": ("submitted_at", "started_at"), "run": ("started_at", "finished_at")}


def _at_point(clauses: list[str], params: list[Any], point: dict[str, Any]):
    """(WHERE, parameters) of ``clauses`` and a benchmark point (benchrun columns, NULL
    matching NULL)."""
    clauses = clauses + [f"{k} is null" if v is None else f"{k} = ?" for k, v in point.items()]
    return " where " + " and ".join(clauses), params + [v for v in point.values() if v is not None]


@dataclass(frozen=True)
class ResultFilter:
    """Which runs to show; empty fields do not filter."""

    models: tuple[str, ...] = ()  # REFs: name, id or path
    machines: tuple[str, ...] = ()  # host names
    since: datetime | None = None
    mlx_versions: tuple[str, ...] = ()
    limit: int = 0  # the newest N runs (still listed oldest first); 0: all
    job_ids: tuple[int, ...] = ()  # only runs these jobs measured
    adapters: tuple[str, ...] = ()  # only runs with these adapters (name, id or path)


class Reader:
    """Read-only queries on one catalog; use as a context manager or call :meth:`close`."""

    def __init__(self, paths: Paths):
        self.paths = paths
        self.con = connect(paths)
        self.dialect: Dialect = getattr(self.con, "dialect", SQLITE)
        self.columns = COLUMNS if self.dialect is SQLITE else _columns(self.dialect)
        self._decoders: dict[str, dict[str, Any]] = {}

    def close(self) -> None:
        self.con.close()

    def __enter__(self) -> Reader:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- rows of one table ------------------------------------------------------------------

    def _table_decoders(self, table: str) -> dict[str, Any]:
        if self.dialect.decodes_types:
            return {}
        if table not in self._decoders:
            info = self.con.execute(f"pragma table_info({table})").fetchall()
            self._decoders[table] = {
                name: dec for _, name, decl, *_ in info if (dec := _decoder(decl or ""))
            }
        return self._decoders[table]

    def rows(self, table: str, sql: str, params: Sequence[Any] = ()) -> Rows:
        """``select * from TABLE ...`` as Rows (columns in the table's order)."""
        cur = self.con.execute(sql, list(params))
        names = [d[0] for d in cur.description]
        decoders = self._table_decoders(table)
        utc = table in UTC_TABLES
        out = []
        for values in cur:
            row = Row(zip(names, values, strict=True))
            for name, dec in decoders.items():
                if name in row:
                    row[name] = dec(row[name])
            if utc:
                for name, value in row.items():
                    if isinstance(value, datetime) and value.tzinfo is None:
                        row[name] = value.replace(tzinfo=UTC)
            out.append(row)
        return Rows(out, names)

    def _one(self, table: str, sql: str, params: Sequence[Any]) -> Row | None:
        found = self.rows(table, sql, params)
        return found[0] if found else None

    def _find(self, kind: refs.RefKind, ref: str | int) -> Row | None:
        """The row ``ref`` names, by the one rule of catalog/refs.py."""
        for column, value in refs.lookups(kind, ref):
            if column == refs.HUB:
                row = self._hub_model(*value)
            else:
                sql = f"select * from {kind.table} where {column} = ? order by id limit 1"
                row = self._one(kind.table, sql, (value,))
            if row is not None:
                return row
        return None

    def _get(self, kind: refs.RefKind, ref: str | int) -> Row:
        row = self._find(kind, ref)
        if row is None:
            raise refs.not_found(kind, ref)
        return row

    # -- jobs -------------------------------------------------------------------------------

    def _job_filter(self, statuses, kind, submitted_by) -> tuple[str, list[Any]]:
        clauses, params = [], []
        if statuses:
            clauses.append(f"status in ({','.join('?' * len(statuses))})")
            params += list(statuses)
        if kind:
            clauses.append("kind = ?")
            params.append(kind)
        if submitted_by is not None:
            clauses.append("submitted_by = ?")
            params.append(submitted_by)
        return (" where " + " and ".join(clauses)) if clauses else "", params

    def jobs(
        self,
        statuses: Sequence[str] | None = None,
        kind: str | None = None,
        limit: int = 0,
        *,
        submitted_by: str | None = None,
    ) -> list[Row]:
        """Jobs oldest first (of one status set, kind, user); with ``limit`` only the newest N."""
        where, params = self._job_filter(statuses, kind, submitted_by)
        sql = f"select * from job{where} order by id desc" + (" limit ?" if limit else "")
        found = self.rows("job", sql, params + ([limit] if limit else []))
        return Rows(reversed(found), found.columns)

    def count_jobs(
        self,
        statuses: Sequence[str] | None = None,
        kind: str | None = None,
        *,
        submitted_by: str | None = None,
    ) -> int:
        where, params = self._job_filter(statuses, kind, submitted_by)
        return self.con.execute(f"select count(*) from job{where}", params).fetchone()[0]

    def job(self, job_id: int) -> Row:
        job = self.find_job(job_id)
        if job is None:
            raise refs.job_not_found(job_id)
        return job

    def find_job(self, job_id: int) -> Row | None:
        return self._one("job", "select * from job where id = ?", (job_id,))

    def job_log(self, job_id: int, after_id: int = 0) -> list[Row]:
        """The pieces of a job's log shipped into the catalog (``JobLog``), after ``after_id``."""
        return self.rows(
            "joblog",
            "select * from joblog where job_id = ? and id > ? order by id",
            (job_id, after_id),
        )

    def jobs_by_id(self, ids: Sequence[int]) -> dict[int, Row]:
        ids = [i for i in ids if i is not None]
        if not ids:
            return {}
        sql = f"select * from job where id in ({','.join('?' * len(ids))})"
        return {j.id: j for j in self.rows("job", sql, ids)}

    # -- models -----------------------------------------------------------------------------

    def models(self) -> Rows:
        return self.rows("model", "select * from model order by id")

    def find_model(self, ref: str | int) -> Row | None:
        """A model by catalog name, catalog id, the path of its folder, or the hub repo it
        was pulled from (catalog/refs.py); None if none."""
        return self._find(refs.MODEL, ref)

    def model(self, ref: str | int) -> Row:
        """As :meth:`find_model`; NotFound (the one message) if none."""
        return self._get(refs.MODEL, ref)

    def model_named(self, name: str) -> Row | None:
        return self._one("model", "select * from model where name = ?", (name,))

    def model_by_id(self, model_id: int | None) -> Row | None:
        if model_id is None:
            return None
        return self._one("model", "select * from model where id = ?", (model_id,))

    def ancestors(self, model_id: int, limit: int = 50) -> list[Row]:
        """A model's parent, its parent's parent, ... (nearest first; cycles cut)."""
        out: list[Row] = []
        seen = {model_id}
        model = self.model_by_id(model_id)
        parent_id = model.parent_id if model else None
        while parent_id is not None and parent_id not in seen and len(out) < limit:
            seen.add(parent_id)
            parent = self.model_by_id(parent_id)
            if parent is None:
                break
            out.append(parent)
            parent_id = parent.parent_id
        return out

    def children(self, model_id: int) -> list[Row]:
        return self.rows(
            "model", "select * from model where parent_id = ? order by id", (model_id,)
        )

    def references(self, model_id: int) -> list[str]:
        """What refers to a model, as phrases ("2 derived models", "1 sweep", ...)."""
        counts = [
            ("derived model", "select count(*) from model where parent_id = ?", 1),
            ("benchmark run", "select count(*) from benchrun where model_id = ?", 1),
            (
                "quality run",
                "select count(*) from qualityrun where model_id = ? or base_model_id = ?",
                2,
            ),
            ("sweep", "select count(*) from sweep where base_model_id = ?", 1),
            (
                "eval run",
                "select count(*) from evalrun where model_id = ? or base_model_id = ?",
                2,
            ),
        ]
        out = []
        for what, sql, n in counts:
            (count,) = self.con.execute(sql, (model_id,) * n).fetchone()
            if count:
                out.append(f"{count} {what}{'s' if count > 1 else ''}")
        return out

    def bench_run_ids(self, model_id: int) -> list[int]:
        sql = "select id from benchrun where model_id = ? order by id"
        return [r[0] for r in self.con.execute(sql, (model_id,))]

    # -- adapters -----------------------------------------------------------------------------

    def find_adapter(self, ref: str | int) -> Row | None:
        """An adapter by catalog name, catalog id, or the path of its folder; None if none."""
        return self._find(refs.ADAPTER, ref)

    def adapter(self, ref: str | int) -> Row:
        return self._get(refs.ADAPTER, ref)

    def adapters(self, base_model_id: int | None = None) -> Rows:
        """Adapters oldest first (only those of one base model, with ``base_model_id``)."""
        if base_model_id is None:
            return self.rows("adapter", "select * from adapter order by id")
        sql = "select * from adapter where base_model_id = ? order by id"
        return self.rows("adapter", sql, (base_model_id,))

    def finetune_steps(self, adapter_id: int) -> Rows:
        sql = "select * from finetunestep where adapter_id = ? order by iteration, id"
        return self.rows("finetunestep", sql, (adapter_id,))

    def finetune_evals(self, adapter_id: int) -> Rows:
        sql = "select * from finetuneeval where adapter_id = ? order by iteration, id"
        return self.rows("finetuneeval", sql, (adapter_id,))

    def finetune_sweeps(self) -> Rows:
        return self.rows("finetunesweep", "select * from finetunesweep order by id")

    def finetune_sweep(self, sweep_id: int) -> Row:
        sql = "select * from finetunesweep where id = ?"
        sweep = self._one("finetunesweep", sql, (sweep_id,))
        if sweep is None:
            raise NotFound(f"finetune sweep {sweep_id} not found; see 'mlxd finetune list'")
        return sweep

    # -- prompt caches ------------------------------------------------------------------------

    def find_prompt_cache(self, ref: str | int) -> Row | None:
        """A prompt cache by name, id, or the path of its file; None if none."""
        return self._find(refs.PROMPT_CACHE, ref)

    def prompt_cache(self, ref: str | int) -> Row:
        return self._get(refs.PROMPT_CACHE, ref)

    def prompt_caches(self) -> Rows:
        return self.rows("promptcache", "select * from promptcache order by id")

    # -- pulled models (hub snapshots) ------------------------------------------------------

    def hub_model(self, ref: str) -> Row | None:
        """The newest pulled model of ``org/name[@revision]`` (catalog/refs.py says which
        revisions match); None if the catalog has none."""
        hub = refs.hub_ref(ref)
        return None if hub is None else self._hub_model(*hub)

    def _hub_model(self, repo: str, rev: str) -> Row | None:
        sql = "select * from hubsnapshot where repo_id = ? order by id desc"
        for snap in self.rows("hubsnapshot", sql, (repo,)):
            if refs.snapshot_matches(snap, rev):
                return self.model_by_id(snap.model_id)
        return None

    def hub_snapshots(self, repo_id: str | None = None) -> Rows:
        """Pulled snapshots oldest first (of one repo, with ``repo_id``)."""
        if repo_id is None:
            return self.rows("hubsnapshot", "select * from hubsnapshot order by id")
        sql = "select * from hubsnapshot where repo_id = ? order by id"
        return self.rows("hubsnapshot", sql, (repo_id,))

    def hub_snapshots_by_model(self) -> dict[int, Row]:
        return {s.model_id: s for s in self.rows("hubsnapshot", "select * from hubsnapshot")}

    def hub_snapshot(self, model_id: int) -> Row | None:
        return self._one("hubsnapshot", "select * from hubsnapshot where model_id = ?", (model_id,))

    def hub_files(self, snapshot_id: int) -> list[Row]:
        sql = "select * from hubfile where snapshot_id = ? order by path"
        return self.rows("hubfile", sql, (snapshot_id,))

    # -- sweeps, probes ---------------------------------------------------------------------

    def sweeps(self) -> list[Row]:
        return self.rows("sweep", "select * from sweep order by id")

    def sweep(self, sweep_id: int) -> Row:
        sweep = self._one("sweep", "select * from sweep where id = ?", (sweep_id,))
        if sweep is None:
            raise NotFound(f"sweep {sweep_id} not found; see 'mlxd sweep list'")
        return sweep

    def bench_run_at(self, job_id: int, point: dict[str, Any]) -> Row | None:
        """The run of a bench job at one point (a reused job may have measured others), of the
        model alone (an adapter bench also measured the model with its adapter)."""
        where, params = _at_point(["job_id = ?", "adapter_id is null"], [job_id], point)
        return self._one("benchrun", f"select * from benchrun {where} order by id limit 1", params)

    # -- what a sweep reuses (jobs/sweeps.py) -----------------------------------------------

    def quantized_children(
        self, parent_id: int, *, mode: str, group_size: int, bits: int, recipe: str | None
    ) -> Rows:
        """Models quantized from ``parent_id`` with this mode, group size and recipe/bits."""
        sql = "select * from model where parent_id = ? and quant_mode = ? and quant_group_size = ?"
        params: list[Any] = [parent_id, mode, group_size]
        if recipe:
            sql += " and quant_recipe = ?"
            params.append(recipe)
        else:
            sql += " and quant_recipe is null and quant_bits = ?"
            params.append(bits)
        return self.rows("model", sql + " order by id", params)

    def newest_bench_job(self, model_id: int, point: dict[str, Any]) -> int | None:
        """The newest bench job that measured ``model_id`` at ``point`` (benchrun columns),
        alone (not with an adapter)."""
        clauses = ["model_id = ?", "job_id is not null", "adapter_id is null"]
        where, params = _at_point(clauses, [model_id], point)
        sql = f"select job_id from benchrun {where} order by id desc limit 1"
        found = self.con.execute(sql, params).fetchone()
        return None if found is None else found[0]

    def quality_runs(self, model_id: int, *, text_sha256: str, base_id: int | None = None) -> Rows:
        """A model's quality runs (made by jobs) on one text, newest first; the model alone,
        not with an adapter."""
        sql = (
            "select * from qualityrun where model_id = ? and job_id is not null "
            "and adapter_id is null and text_sha256 = ?"
        )
        params: list[Any] = [model_id, text_sha256]
        if base_id is not None:
            sql += " and base_model_id = ?"
            params.append(base_id)
        return self.rows("qualityrun", sql + " order by id desc", params)

    def quality_run_of_job(self, job_id: int) -> Row | None:
        sql = "select * from qualityrun where job_id = ? order by id limit 1"
        return self._one("qualityrun", sql, (job_id,))

    def quality_rows(
        self,
        model_ids: Sequence[int] | None = None,
        adapter_ids: Sequence[int] | None = None,
    ) -> list[dict[str, Any]]:
        """Quality runs as flat rows, oldest first, with model, base and machine names; a run
        with an unfused adapter has the model "model+adapter" and the adapter's name."""
        clauses, params = [], []
        if model_ids:
            clauses.append(f"q.model_id in ({','.join('?' * len(model_ids))})")
            params += list(model_ids)
        if adapter_ids:
            clauses.append(f"q.adapter_id in ({','.join('?' * len(adapter_ids))})")
            params += list(adapter_ids)
        where = (" where " + " and ".join(clauses)) if clauses else ""
        sql = f"""
            select q.*, {MODEL_LABEL} as model, a.name as adapter, b.name as base,
                   m.bits_per_weight, s.host, s.backend,
                   s.chip, s.os_name || ' ' || s.os_version as os, s.mlx_version,
                   s.mlx_lm_version
            from qualityrun q
            join model m on m.id = q.model_id
            left join adapter a on a.id = q.adapter_id
            left join model b on b.id = q.base_model_id
            left join system s on s.id = q.system_id
            {where} order by q.id
        """
        found = self.rows("qualityrun", sql, params)
        first = ["run_id", "job_id", "model", "model_id"]
        rows = Rows((), first + [c for c in found.columns if c not in (*first, "id")])
        for r in found:
            run_id, job_id, model, model_id = (
                r.pop("id"),
                r.pop("job_id"),
                r.pop("model"),
                r.pop("model_id"),
            )
            rows.append(
                {"run_id": run_id, "job_id": job_id, "model": model, "model_id": model_id, **r}
            )
        return rows

    # -- eval runs (task accuracy) ----------------------------------------------------------

    def eval_rows(self, model_ids: Sequence[int] | None = None) -> Rows:
        """Eval runs, oldest first, with the model's name, quantization and bits per weight,
        its base's name and the machine."""
        if not model_ids:
            return self._eval_where("1 = 1", [])
        return self._eval_where(f"e.model_id in ({','.join('?' * len(model_ids))})", model_ids)

    def eval_run(self, run_id: int) -> Row:
        found = self._eval_where("e.id = ?", [run_id])
        if not found:
            raise NotFound(f"eval run {run_id} not found; see 'mlxd eval list'")
        return found[0]

    def _eval_where(self, clause: str, params: Sequence[Any]) -> Rows:
        sql = f"""
            select e.*, m.name as model, b.name as base, {QUANT_LABEL} as quantization,
                   m.bits_per_weight, m.dtype, s.host
            from evalrun e
            join model m on m.id = e.model_id
            left join model b on b.id = e.base_model_id
            left join system s on s.id = e.system_id
            where {clause} order by e.id
        """
        return self.rows("evalrun", sql, params)

    def eval_runs_of_job(self, job_id: int) -> Rows:
        """The runs an eval job stored (its model's, and its base's when it scored it)."""
        return self._eval_where("e.job_id = ?", [job_id])

    def eval_items(self, run_id: int) -> Rows:
        sql = "select * from evalitem where run_id = ? order by task, item"
        return self.rows("evalitem", sql, (run_id,))

    def eval_run_with_protocol(self, model_id: int, protocol: str) -> Row | None:
        """A model's newest eval run (made by a job) that scored these items this way."""
        sql = (
            "select * from evalrun where model_id = ? and protocol = ? and job_id is not null "
            "order by id desc limit 1"
        )
        return self._one("evalrun", sql, (model_id, protocol))

    def latest_eval_runs(self) -> Rows:
        """Each model's newest eval run."""
        return self.rows(
            "evalrun",
            "select * from evalrun where id in (select max(id) from evalrun group by model_id)",
        )

    def latest_probe(self, host: str) -> Row | None:
        sql = "select * from probe where host = ? order by id desc limit 1"
        return self._one("probe", sql, (host,))

    def machines(self) -> list[Row]:
        """The daemons on this catalog (``machine`` rows), by host id."""
        return self.rows("machine", "select * from machine order by host_id")

    # -- the team server's users -------------------------------------------------------------

    def api_users(self) -> Rows:
        """The server's users by name (their token hashes included: callers show none)."""
        return self.rows("apiuser", "select * from apiuser order by name")

    def api_user_by_token(self, token_sha256: str) -> Row | None:
        """The user whose token hashes to ``token_sha256`` (the lookup is by the hash; the
        caller compares it again in constant time)."""
        return self._one("apiuser", "select * from apiuser where token_sha256 = ?", (token_sha256,))

    def api_user(self, name: str) -> Row | None:
        return self._one("apiuser", "select * from apiuser where name = ?", (name,))

    # -- benchmark results ------------------------------------------------------------------

    def _where(self, flt: ResultFilter) -> tuple[str, list[Any]]:
        clauses, params = [], []
        if flt.models:
            ids = [self.model(ref).id for ref in flt.models]
            clauses.append(f"r.model_id in ({','.join('?' * len(ids))})")
            params += ids
        if flt.machines:
            self.check_known("host", flt.machines, "machine")
            clauses.append(f"s.host in ({','.join('?' * len(flt.machines))})")
            params += flt.machines
        if flt.mlx_versions:
            self.check_known("mlx_version", flt.mlx_versions, "mlx version")
            clauses.append(f"s.mlx_version in ({','.join('?' * len(flt.mlx_versions))})")
            params += flt.mlx_versions
        if flt.adapters:
            ids = [self.adapter(ref).id for ref in flt.adapters]
            clauses.append(f"r.adapter_id in ({','.join('?' * len(ids))})")
            params += ids
        if flt.job_ids:
            clauses.append(f"r.job_id in ({','.join('?' * len(flt.job_ids))})")
            params += list(flt.job_ids)
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

    def check_known(self, column: str, values: Sequence[str], what: str) -> None:
        known = [r[0] for r in self.con.execute(f"select distinct {column} from system order by 1")]
        for v in values:
            if v not in known:
                listed = ", ".join(known) if known else "none yet"
                raise QueryError(
                    f"no benchmarks from {what} '{v}' in the catalog (known: {listed})"
                )

    def result_rows(self, flt: ResultFilter = ResultFilter()) -> list[dict]:
        """One dict per benchmark run (a measured point), oldest first; created_at is a datetime."""
        where, params = self._where(flt)
        select = ", ".join(f"{expr} as {name}" for name, expr in self.columns)
        cur = self.con.execute(f"select {select} {_FROM} {where} order by r.id", params)
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
        self, flt: ResultFilter = ResultFilter(), *, after_id: int = 0
    ) -> list[str]:
        """The same rows as JSON object texts, built by SQLite (the fast path of --json);
        only runs with an id above ``after_id``."""
        where, params = self._where(flt)
        where, params = (where + " and " if where else " where ") + "r.id > ?", [*params, after_id]
        sql = self.dialect.json_rows_sql(
            self.columns, BOOL_COLUMNS, f"{_FROM} {where} order by r.id"
        )
        try:
            return [row[0] for row in self.con.execute(sql, params)]
        except sqlite3.OperationalError as e:
            if "json" not in str(e):
                raise
            # An SQLite built without JSON functions: let Python encode.
            return [
                json.dumps(r | {"created_at": r["created_at"].isoformat()})
                for r in self.result_rows(flt)
                if r["run_id"] > after_id
            ]

    def hidden_by_limit(self, flt: ResultFilter, shown: int) -> int:
        """How many matching runs --limit left out."""
        if not flt.limit or shown < flt.limit:
            return 0
        where, params = self._where(replace(flt, limit=0))
        (total,) = self.con.execute(f"select count(*) {_FROM} {where}", params).fetchone()
        return max(total - shown, 0)

    def result_csv_rows(self, flt: ResultFilter = ResultFilter()):
        """(column names, row tuples) for CSV: the values as stored, no per-row dicts."""
        where, params = self._where(flt)
        select = ", ".join(f"{expr} as {name}" for name, expr in self.columns)
        cur = self.con.execute(f"select {select} {_FROM} {where} order by r.id", params)
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

    def side_groups(
        self,
        side_clause: str,
        side_value: Any,
        context: Sequence[str],
        flt: ResultFilter,
    ) -> dict[tuple, dict[str, list[tuple[int, float, float]]]]:
        """key (context + point) -> metric -> [(n, mean, std)]: one group per trial, or per run
        where a run has no trial rows."""
        where, params = self._where(flt)
        where = (where + " and " if where else " where ") + side_clause
        ctx = {"model": MODEL_LABEL, "host": "s.host"}
        key_cols = [ctx[c] for c in context] + [f"r.{c}" for c in BENCH_POINT_KEYS]
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
        for row in self.con.execute(sql, [*params, side_value]):
            key, rest = tuple(row[:nk]), row[nk:]
            metrics = out.setdefault(key, {})
            trial_id, tp, tg, tt, tm, n, pm, ps, gm, gs, tmn, tsd, peak = rest
            if trial_id is not None:
                groups = (
                    ("prompt_tps", tp, 0.0),
                    ("generation_tps", tg, 0.0),
                    ("ttft_s", tt, 0.0),
                    ("peak_memory_bytes", tm, 0.0),
                )
                n = 1
            else:
                groups = (
                    ("prompt_tps", pm, ps),
                    ("generation_tps", gm, gs),
                    ("ttft_s", tmn, tsd),
                    ("peak_memory_bytes", peak, 0.0),
                )
            for name, mean, std in groups:
                if mean is not None and n:
                    metrics.setdefault(name, []).append((n, mean, std or 0.0))
        return out

    # -- reports (mlxd/reports turns these rows into what a person reads) -------------------

    def report_models(self) -> list[Row]:
        """Every model with the fields a report labels it by, oldest first."""
        return self.rows(
            "model",
            "select id, name, parent_id, dtype, quant_bits, quant_group_size, quant_mode, "
            "quant_recipe, bits_per_weight, size_bytes, synthetic from model order by id",
        )

    def systems(self) -> list[Row]:
        return self.rows("system", "select * from system order by id")

    def latest_quality_runs(self) -> list[Row]:
        """Each model's newest quality run of its own (no adapter), with its base's name."""
        return self.rows(
            "qualityrun",
            "select q.*, b.name as base_name from qualityrun q "
            "left join model b on b.id = q.base_model_id where q.id in "
            "(select max(id) from qualityrun where adapter_id is null group by model_id)",
        )

    def _own_runs_where(self, flt: ResultFilter, model_ids: Sequence[int] | None):
        """The runs of ``flt`` (of ``model_ids`` when given) that are a model's own: runs
        with an unfused adapter (bench --adapter) are not."""
        where, params = self._where(flt)
        clauses = ["r.adapter_id is null"]
        if model_ids is not None:
            clauses.append(f"r.model_id in ({','.join('?' * len(model_ids)) or 'null'})")
            params = [*params, *model_ids]
        return (where + " and " if where else " where ") + " and ".join(clauses), params

    def point_groups(
        self, flt: ResultFilter, model_ids: Sequence[int] | None = None
    ) -> list[tuple]:
        """(model id, host, *point, runs, newest run id) per model, machine and benchmark
        point: the aggregation a report starts from."""
        where, params = self._own_runs_where(flt, model_ids)
        cols = ", ".join(f"r.{c}" for c in BENCH_POINT_KEYS)
        sql = (
            f"select r.model_id, s.host, {cols}, count(*), max(r.id) from benchrun r "
            f"join system s on s.id = r.system_id {where} group by r.model_id, s.host, {cols}"
        )
        return [tuple(row) for row in self.con.execute(sql, params)]

    def bench_runs(self, ids: Sequence[int]) -> dict[int, Row]:
        """Benchmark runs by id (every column; JSON decoded)."""
        out: dict[int, Row] = {}
        ids = list(ids)
        for i in range(0, len(ids), 500):
            chunk = ids[i : i + 500]
            sql = f"select * from benchrun where id in ({','.join('?' * len(chunk))})"
            out.update({r.id: r for r in self.rows("benchrun", sql, chunk)})
        return out

    def generation_history(
        self, flt: ResultFilter, model_ids: Sequence[int], point: Sequence[Any]
    ) -> list[tuple]:
        """(model id, host, UTC day, mlx version, mean generation tok/s, runs) at one
        benchmark point (values in BENCH_POINT_KEYS' order), oldest day first."""
        where, params = self._own_runs_where(replace(flt, since=None), model_ids)
        same = " and ".join(self.dialect.same_as(f"r.{c}") for c in BENCH_POINT_KEYS)
        sql = (
            f"select r.model_id, s.host, {self.dialect.utc_day('r.created_at')}, s.mlx_version, "
            "avg(r.generation_tps_mean), count(*) from benchrun r "
            f"join system s on s.id = r.system_id {where} and {same} "
            "and r.generation_tps_mean is not null group by 1, 2, 3, 4 order by 3, 1, 2"
        )
        return [tuple(row) for row in self.con.execute(sql, [*params, *point])]

    def version_groups(self, flt: ResultFilter, metrics: Sequence[str]) -> list[tuple]:
        """Per model, machine, point and mlx / mlx-lm versions: (model id, host, *point,
        mlx, mlx-lm, first run's time, then per metric the pooled sums n, sum(n*mean),
        sum((n-1)*sd^2 + n*mean^2)) -- what regressions compares."""
        where, params = self._own_runs_where(flt, None)
        cols = ", ".join(f"r.{c}" for c in BENCH_POINT_KEYS)
        sums = []
        for metric in metrics:
            m, sd = f"r.{metric}_mean", f"coalesce(r.{metric}_std, 0)"
            sums.append(
                f"sum(case when {m} is not null then r.trials end), sum(r.trials * {m}), "
                f"sum(case when {m} is not null then "
                f"(r.trials - 1) * {sd} * {sd} + r.trials * {m} * {m} end)"
            )
        sql = (
            f"select r.model_id, s.host, {cols}, s.mlx_version, s.mlx_lm_version, "
            f"min(r.created_at), {', '.join(sums)} "
            f"from benchrun r join system s on s.id = r.system_id {where} "
            f"group by r.model_id, s.host, {cols}, s.mlx_version, s.mlx_lm_version"
        )
        return [tuple(row) for row in self.con.execute(sql, params)]

    def finetune_losses(self, adapter_ids: Sequence[int]) -> dict[int, dict[str, list]]:
        """adapter id -> {"train": [(iteration, loss)], "valid": [...]}: the step and
        validation rows the fine-tuning jobs stored."""
        out: dict[int, dict[str, list]] = {a: {"train": [], "valid": []} for a in adapter_ids}
        if not adapter_ids:
            return out
        marks = ",".join("?" * len(adapter_ids))
        for a, it, loss in self.con.execute(
            f"select adapter_id, iteration, train_loss from finetunestep "
            f"where adapter_id in ({marks}) order by iteration, id",
            list(adapter_ids),
        ):
            out[a]["train"].append((it, loss))
        for a, it, loss in self.con.execute(
            f"select adapter_id, iteration, loss from finetuneeval "
            f"where split = 'valid' and adapter_id in ({marks}) order by iteration, id",
            list(adapter_ids),
        ):
            out[a]["valid"].append((it, loss))
        return out

    def jobs_since(self, since: datetime) -> list[Row]:
        """Jobs that finished since ``since``, plus the ones still queued or running."""
        return self.rows(
            "job",
            "select * from job where finished_at >= ? or status in ('queued', 'running') "
            "order by id",
            (since.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f"),),
        )

    # -- what the team server's /metrics reports -------------------------------------------

    def job_counts(self) -> list[tuple[str, str, int]]:
        """(status, pool, jobs) for every status and pool that has jobs."""
        sql = "select status, pool, count(*) from job group by status, pool order by 1, 2"
        return [tuple(row) for row in self.con.execute(sql)]

    def running_jobs_per_host(self) -> list[tuple[str | None, int]]:
        """(host, running jobs) for every host running some."""
        sql = "select host, count(*) from job where status = 'running' group by host order by 1"
        return [tuple(row) for row in self.con.execute(sql)]

    def job_durations(self, span: str, bounds: Sequence[float]) -> list[tuple]:
        """Per job kind, a histogram of the seconds a job spent in ``span`` ("wait": submitted
        to started, "run": started to finished, finished jobs only): (kind, jobs, total
        seconds, then the cumulative count at or under each of ``bounds``), kinds in order."""
        start, end = _SPANS[span]
        secs = self.dialect.seconds_between(start, end)
        under = "".join(", sum(case when secs <= ? then 1 else 0 end)" for _ in bounds)
        sql = (
            f"select kind, count(*), coalesce(sum(secs), 0){under} from "
            f"(select kind, {secs} as secs from job where {start} is not null "
            f"and {end} is not null) t group by kind order by kind"
        )
        return [tuple(row) for row in self.con.execute(sql, list(bounds))]

    def bench_runs_mark(self) -> tuple[int, int | None]:
        """(runs, newest run id): changes whenever a run is added or removed."""
        return tuple(self.con.execute("select count(*), max(id) from benchrun").fetchone())

    def latest_speeds(self) -> list[Row]:
        """The newest run of each model's own (no adapter) at each host and benchmark point:
        model name, host, the point's columns, generation and prompt tok/s (means)."""
        where, params = self._own_runs_where(ResultFilter(), None)
        cols = ", ".join(f"r.{c}" for c in BENCH_POINT_KEYS)
        newest = (
            f"select max(r.id) from benchrun r join system s on s.id = r.system_id {where} "
            f"group by r.model_id, s.host, {cols}"
        )
        return self.rows(
            "benchrun",
            f"select m.name as model, s.host, {cols}, r.generation_tps_mean, "
            "r.prompt_tps_mean from benchrun r join model m on m.id = r.model_id "
            f"join system s on s.id = r.system_id where r.id in ({newest}) order by r.id",
            params,
        )

    def compare_side(self, by: str) -> str:
        """The clause that picks one side of ``results --compare`` (model, machine, mlx)."""
        return _COMPARE_SIDE[by]

    def all_in_systems(self, column: str, values: Sequence[str]) -> bool:
        """Whether every value names a machine (host) or an mlx version with benchmarks."""
        q = f"select count(distinct {column}) from system where {column} in ({','.join('?' * len(values))})"
        return self.con.execute(q, list(values)).fetchone()[0] == len(set(values))
