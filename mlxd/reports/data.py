"""What a report shows, read from the catalog with the stdlib's sqlite3.

A report is per model *family*: a root model (no parent) and every variant derived from it
(quantized, converted, fine-tuned). For each family one benchmark point is the headline (the
point most of its variants were measured at), and each variant gets its newest run there on
each machine. Everything is aggregated in SQL first (``group by`` over the runs), so the
Python side handles a few thousand groups even when the catalog holds 100,000 runs.
"""

from __future__ import annotations

import json
import sqlite3
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from mlxd.catalog.read import Reader, ResultFilter
from mlxd.jobs.choices import BENCH_POINT_KEYS as POINT_FIELDS
from mlxd.reports.fmt import size

DTYPE_BITS = {"float32": 32.0, "float16": 16.0, "bfloat16": 16.0}


def parse_ts(text: str | None) -> datetime | None:
    """A catalog timestamp (UTC text as SQLAlchemy stores it) as an aware datetime."""
    if not text:
        return None
    dt = datetime.fromisoformat(text)
    return dt if dt.tzinfo else dt.replace(tzinfo=UTC)


def sql_ts(dt: datetime) -> str:
    return dt.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")


@dataclass(frozen=True)
class SystemFacts:
    """The machine and software a figure came from."""

    id: int
    host: str
    chip: str | None
    cpu: str
    ram_bytes: int | None
    os: str
    backend: str
    mlx_version: str
    mlx_lm_version: str

    @property
    def label(self) -> str:
        ram = f", {size(self.ram_bytes)}" if self.ram_bytes else ""  # a unit per value
        return (
            f"{self.host}: {self.chip or self.cpu}{ram}, {self.os}, {self.backend}, "
            f"mlx {self.mlx_version}, mlx-lm {self.mlx_lm_version}"
        )


@dataclass(frozen=True)
class ModelInfo:
    id: int
    name: str
    parent_id: int | None
    variant: str  # "4bit-g64", "mxfp4-g32", "mixed_3_6", or the dtype of an unquantized model
    bits_per_weight: float | None
    size_bytes: int | None
    synthetic: bool
    family: str = ""  # the root model's name

    @property
    def is_quantized(self) -> bool:
        return self.variant not in DTYPE_BITS and self.variant != "?"


@dataclass(frozen=True)
class QualityFigures:
    run_id: int
    perplexity: float
    kl_mean: float | None
    top1_agreement: float | None
    base: str | None  # the model it was compared with
    created_at: datetime | None


@dataclass(frozen=True)
class VariantFigures:
    """One variant on one machine: its newest run at the family's headline point."""

    model: ModelInfo
    host: str
    system_id: int
    run_id: int
    point: dict[str, Any]
    trials: int
    runs: int  # runs at this point on this machine (the newest one is shown)
    prompt_tps: float | None
    prompt_tps_std: float | None
    prompt_tps_ci95: float | None
    generation_tps: float | None
    generation_tps_std: float | None
    generation_tps_ci95: float | None
    peak_memory_bytes: int | None
    model_memory_bytes: int | None
    noisy: bool
    created_at: datetime | None
    quality: QualityFigures | None = None

    @property
    def weights_bytes(self) -> int | None:
        return self.model_memory_bytes or self.model.size_bytes

    @property
    def memory_needed_bytes(self) -> int | None:
        """What running it takes: the measured peak (MLX counts the loaded weights in it),
        never less than the weights themselves."""
        values = [v for v in (self.peak_memory_bytes, self.weights_bytes) if v]
        return max(values) if values else None


@dataclass(frozen=True)
class DepthPoint:
    depth: int
    prompt_tps: float | None
    generation_tps: float | None


@dataclass(frozen=True)
class DepthSeries:
    """Speed against context depth for one variant, machine and otherwise-equal settings."""

    model: str
    host: str
    point: dict[str, Any]  # without depth
    points: list[DepthPoint]


@dataclass(frozen=True)
class HistoryPoint:
    """Mean generation tok/s of one variant at the headline point, per day and mlx version."""

    model: str
    host: str
    day: str  # YYYY-MM-DD (UTC)
    mlx_version: str
    generation_tps: float
    runs: int


@dataclass(frozen=True)
class FinetuneRun:
    job_id: int
    model: str  # the model it trained
    output: str | None  # the adapter or fused model it made
    status: str
    iterations: int | None
    final_train_loss: float | None
    final_val_loss: float | None
    train_losses: list[tuple[int, float]]
    val_losses: list[tuple[int, float]]
    finished_at: datetime | None


@dataclass
class Family:
    name: str
    root_id: int
    models: list[ModelInfo]
    point: dict[str, Any] | None  # the headline benchmark point
    rows: list[VariantFigures] = field(default_factory=list)
    depth_series: list[DepthSeries] = field(default_factory=list)
    history: list[HistoryPoint] = field(default_factory=list)
    unmeasured: list[ModelInfo] = field(default_factory=list)  # no run at the headline point
    finetunes: list[FinetuneRun] = field(default_factory=list)


@dataclass(frozen=True)
class JobLine:
    id: int
    kind: str
    status: str
    model: str | None
    submitted_at: datetime | None
    started_at: datetime | None
    finished_at: datetime | None
    error: str | None
    after_job_id: int | None

    @property
    def duration_s(self) -> float | None:
        if self.started_at and self.finished_at:
            return (self.finished_at - self.started_at).total_seconds()
        return None


@dataclass
class ReportData:
    generated_at: datetime
    since: datetime | None
    machines: tuple[str, ...]
    families: list[Family]
    systems: dict[int, SystemFacts]
    jobs_since: datetime
    jobs: list[JobLine]
    total_runs: int


# -- reading ---------------------------------------------------------------------------------


def variant_label(row: sqlite3.Row | dict) -> str:
    if row["quant_recipe"]:
        return row["quant_recipe"] + (
            f"-g{row['quant_group_size']}" if row["quant_group_size"] else ""
        )
    if row["quant_mode"] and row["quant_mode"] != "affine":
        return row["quant_mode"] + (
            f"-g{row['quant_group_size']}" if row["quant_group_size"] else ""
        )
    if row["quant_bits"] is not None:
        return f"{row['quant_bits']}bit-g{row['quant_group_size']}"
    return row["dtype"] or "?"


def load_models(con: sqlite3.Connection) -> dict[int, ModelInfo]:
    """Every model, with its family (the root of its lineage)."""
    cur = con.execute(
        "select id, name, parent_id, dtype, quant_bits, quant_group_size, quant_mode, "
        "quant_recipe, bits_per_weight, size_bytes, synthetic from model order by id"
    )
    names = [d[0] for d in cur.description]
    rows = [dict(zip(names, r, strict=True)) for r in cur]
    by_id = {r["id"]: r for r in rows}

    def root(model_id: int) -> int:
        seen = set()
        while by_id[model_id]["parent_id"] in by_id and model_id not in seen:
            seen.add(model_id)
            model_id = by_id[model_id]["parent_id"]
        return model_id

    out = {}
    for r in rows:
        bpw = r["bits_per_weight"] or DTYPE_BITS.get(r["dtype"] or "")
        out[r["id"]] = ModelInfo(
            id=r["id"],
            name=r["name"],
            parent_id=r["parent_id"],
            variant=variant_label(r),
            bits_per_weight=bpw,
            size_bytes=r["size_bytes"],
            synthetic=bool(r["synthetic"]),
            family=by_id[root(r["id"])]["name"],
        )
    return out


def load_systems(con: sqlite3.Connection) -> dict[int, SystemFacts]:
    cur = con.execute(
        "select id, host, chip, cpu, ram_bytes, os_name || ' ' || os_version, backend, "
        "mlx_version, mlx_lm_version from system order by id"
    )
    return {r[0]: SystemFacts(*r) for r in cur}


def latest_quality(con: sqlite3.Connection) -> dict[int, QualityFigures]:
    """Each model's newest quality run."""
    cur = con.execute(
        "select q.model_id, q.id, q.perplexity, q.kl_mean, q.top1_agreement, b.name, "
        "q.created_at from qualityrun q left join model b on b.id = q.base_model_id "
        "where q.id in (select max(id) from qualityrun where adapter_id is null group by model_id)"
    )
    return {r[0]: QualityFigures(r[1], r[2], r[3], r[4], r[5], parse_ts(r[6])) for r in cur}


def _headline(groups: list[dict[str, Any]]) -> tuple | None:
    """The point most variants were measured at: single-sequence, empty cache preferred."""
    if not groups:
        return None
    score: dict[tuple, list] = {}
    for g in groups:
        s = score.setdefault(g["point"], [set(), 0, 0])
        s[0].add(g["model_id"])
        s[1] += g["runs"]
        s[2] = max(s[2], g["last_id"])

    def rank(key: tuple) -> tuple:
        pt = dict(zip(POINT_FIELDS, key, strict=True))
        plain = pt["batch_size"] == 1 and pt["depth"] == 0 and pt["kv_bits"] is None
        variants, runs, last = score[key]
        return (plain, len(variants), runs, last)

    return max(score, key=rank)


def family_ids(reader: Reader, models: dict[int, ModelInfo], refs: Sequence[str]) -> set[str]:
    """The families of the given REFs (a variant brings its whole family)."""
    return {models[reader.model(ref).id].family for ref in refs}


def build_report(
    reader: Reader,
    *,
    models: Sequence[str] = (),
    since: datetime | None = None,
    machines: Sequence[str] = (),
    now: datetime | None = None,
    jobs_since: datetime | None = None,
) -> ReportData:
    """Everything a report shows, for the given filters."""
    now = now or datetime.now(UTC)
    con = reader.con
    all_models = load_models(con)
    wanted = family_ids(reader, all_models, models) if models else None
    flt = ResultFilter(machines=tuple(machines), since=since)
    where, params = reader._where(flt)
    if wanted is not None:
        ids = [m.id for m in all_models.values() if m.family in wanted]
        where = (
            where + " and " if where else " where "
        ) + f"r.model_id in ({','.join('?' * len(ids))})"
        params = [*params, *ids]
    # Runs of a model with an unfused adapter are not the model's own (see bench --adapter).
    where = (where + " and " if where else " where ") + "r.adapter_id is null"
    point_cols = ", ".join(f"r.{c}" for c in POINT_FIELDS)
    groups_by_family: dict[str, list[dict[str, Any]]] = defaultdict(list)
    total = 0
    for row in con.execute(
        f"select r.model_id, s.host, {point_cols}, count(*), max(r.id) from benchrun r "
        f"join system s on s.id = r.system_id {where} group by r.model_id, s.host, {point_cols}",
        params,
    ):
        model = all_models[row[0]]
        n = len(POINT_FIELDS)
        groups_by_family[model.family].append(
            {
                "model_id": row[0],
                "host": row[1],
                "point": tuple(row[2 : 2 + n]),
                "runs": row[2 + n],
                "last_id": row[3 + n],
            }
        )
        total += row[2 + n]
    quality = latest_quality(con)
    family_names = sorted({m.family for m in all_models.values()} if wanted is None else wanted)
    families = []
    for name in family_names:
        members = [m for m in all_models.values() if m.family == name]
        groups = groups_by_family.get(name, [])
        if not groups and wanted is None:
            continue  # a report lists what was measured; --model asks for a family anyway
        head = _headline(groups)
        fam = Family(
            name=name,
            root_id=min(m.id for m in members if m.name == name) if members else 0,
            models=members,
            point=dict(zip(POINT_FIELDS, head, strict=True)) if head else None,
        )
        at_head = [g for g in groups if g["point"] == head]
        fam.rows = _variant_rows(con, at_head, all_models, quality)
        fam.rows.sort(key=lambda v: (-(v.model.bits_per_weight or 0), v.model.name, v.host))
        measured = {v.model.id for v in fam.rows}
        fam.unmeasured = [m for m in members if m.id not in measured]
        fam.depth_series = _depth_series(con, groups, all_models)
        if head:
            fam.history = _history(reader, [m.id for m in members], head, flt, all_models)
        families.append(fam)
    finetunes = _finetunes(con, all_models)
    for fam in families:
        fam.finetunes = [run for family, run in finetunes if family == fam.name]
    jobs_since = jobs_since or since or now - timedelta(hours=24)
    return ReportData(
        generated_at=now,
        since=since,
        machines=tuple(machines),
        families=families,
        systems=load_systems(con),
        jobs_since=jobs_since,
        jobs=recent_jobs(con, jobs_since),
        total_runs=total,
    )


_RUN_COLS = (
    "id, model_id, system_id, trials, prompt_tps_mean, prompt_tps_std, "
    "coalesce(prompt_tps_ci95, json_extract(details, '$.prompt_tps_ci95')), "
    "generation_tps_mean, generation_tps_std, "
    "coalesce(generation_tps_ci95, json_extract(details, '$.generation_tps_ci95')), "
    "peak_memory_bytes, model_memory_bytes, noisy, created_at, depth"
)


def _runs_by_id(con: sqlite3.Connection, ids: Sequence[int]) -> dict[int, tuple]:
    out = {}
    ids = list(ids)
    for i in range(0, len(ids), 500):
        chunk = ids[i : i + 500]
        q = f"select {_RUN_COLS} from benchrun where id in ({','.join('?' * len(chunk))})"
        out.update({r[0]: r for r in con.execute(q, chunk)})
    return out


def _variant_rows(con, groups, all_models, quality) -> list[VariantFigures]:
    runs = _runs_by_id(con, [g["last_id"] for g in groups])
    rows = []
    for g in groups:
        r = runs[g["last_id"]]
        model = all_models[g["model_id"]]
        rows.append(
            VariantFigures(
                model=model,
                host=g["host"],
                system_id=r[2],
                run_id=r[0],
                point=dict(zip(POINT_FIELDS, g["point"], strict=True)),
                trials=r[3],
                runs=g["runs"],
                prompt_tps=r[4],
                prompt_tps_std=r[5],
                prompt_tps_ci95=r[6],
                generation_tps=r[7],
                generation_tps_std=r[8],
                generation_tps_ci95=r[9],
                peak_memory_bytes=r[10],
                model_memory_bytes=r[11],
                noisy=bool(r[12]),
                created_at=parse_ts(r[13]),
                quality=quality.get(model.id),
            )
        )
    return rows


def _depth_series(con, groups, all_models) -> list[DepthSeries]:
    """Groups that differ only in depth, with at least two depths, as one series each."""
    di = POINT_FIELDS.index("depth")
    series: dict[tuple, list[dict]] = defaultdict(list)
    for g in groups:
        rest = g["point"][:di] + g["point"][di + 1 :]
        series[(g["model_id"], g["host"], rest)].append(g)
    wanted = {k: v for k, v in series.items() if len({g["point"][di] for g in v}) >= 2}
    runs = _runs_by_id(con, [g["last_id"] for v in wanted.values() for g in v])
    out = []
    for (model_id, host, rest), gs in sorted(wanted.items(), key=lambda kv: (kv[0][0], kv[0][1])):
        point = dict(zip([f for f in POINT_FIELDS if f != "depth"], rest, strict=True))
        pts = sorted(
            (DepthPoint(g["point"][di], runs[g["last_id"]][4], runs[g["last_id"]][7]) for g in gs),
            key=lambda p: p.depth,
        )
        out.append(DepthSeries(all_models[model_id].name, host, point, pts))
    return out


def _history(reader, model_ids, head: tuple, flt: ResultFilter, all_models) -> list[HistoryPoint]:
    con = reader.con
    where, params = reader._where(replace(flt, since=None))
    clauses = [f"r.model_id in ({','.join('?' * len(model_ids))})"]
    clauses += [f"r.{c} is ?" for c in POINT_FIELDS] + ["r.adapter_id is null"]
    where = (where + " and " if where else " where ") + " and ".join(clauses)
    q = (
        "select r.model_id, s.host, substr(r.created_at, 1, 10), s.mlx_version, "
        "avg(r.generation_tps_mean), count(*) from benchrun r join system s on s.id = r.system_id"
        f" {where} and r.generation_tps_mean is not null group by 1, 2, 3, 4 order by 3, 1, 2"
    )
    return [
        HistoryPoint(all_models[m].name, host, day, mlx, tps, n)
        for m, host, day, mlx, tps, n in con.execute(q, [*params, *model_ids, *head])
    ]


def _finetunes(con, all_models) -> list[tuple[str, FinetuneRun]]:
    """Fine-tuning jobs with the losses their result recorded (when the kind exists)."""
    out = []
    # Whatever the kind is called, a fine-tuning job's result carries its losses.
    q = (
        "select id, status, params, result, output_model_id, finished_at from job "
        "where status = 'succeeded' and (kind = 'finetune' or "
        "json_extract(result, '$.final_train_loss') is not null) order by id"
    )
    by_name = {m.name: m for m in all_models.values()}
    for job_id, status, params, result, output_id, finished in con.execute(q):
        p, res = json.loads(params or "{}"), json.loads(result or "{}")
        model = all_models.get(p.get("model_id")) or by_name.get(p.get("model"))
        if model is None:
            continue
        output = all_models.get(output_id)
        out.append(
            (
                model.family,
                FinetuneRun(
                    job_id=job_id,
                    model=model.name,
                    output=output.name if output else res.get("adapter") or p.get("name"),
                    status=status,
                    iterations=res.get("iterations"),
                    final_train_loss=res.get("final_train_loss"),
                    final_val_loss=res.get("final_val_loss"),
                    train_losses=[tuple(x) for x in res.get("train_losses") or []],
                    val_losses=[tuple(x) for x in res.get("val_losses") or []],
                    finished_at=parse_ts(finished),
                ),
            )
        )
    return out


def recent_jobs(con: sqlite3.Connection, since: datetime) -> list[JobLine]:
    """Jobs that finished since ``since``, plus the ones still queued or running."""
    q = (
        "select id, kind, status, params, submitted_at, started_at, finished_at, error, "
        "after_job_id from job where finished_at >= ? or status in ('queued', 'running') "
        "order by id"
    )
    out = []
    for jid, kind, status, params, sub, start, fin, error, after in con.execute(
        q, (sql_ts(since),)
    ):
        p = json.loads(params or "{}")
        out.append(
            JobLine(
                jid,
                kind,
                status,
                p.get("model") or p.get("base") or p.get("name"),
                parse_ts(sub),
                parse_ts(start),
                parse_ts(fin),
                error,
                after,
            )
        )
    return out
