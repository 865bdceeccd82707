"""What a report shows, read from the catalog through the Reader (its SQL is in catalog/read.py).

A report is per model *family*: a root model (no parent) and every variant derived from it
(quantized, converted, fine-tuned). For each family one benchmark point is the headline (the
point most of its variants were measured at), and each variant gets its newest run there on
each machine. Everything is aggregated in SQL first (``group by`` over the runs), so the
Python side handles a few thousand groups even when the catalog holds 100,000 runs.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime, timedelta
from typing import Any

from mlxd.catalog.read import Reader, ResultFilter
from mlxd.vocab.choices import BENCH_POINT_KEYS as POINT_FIELDS
from mlxd.vocab.choices import model_quant_label, quant_method
from mlxd.vocab.fmt import size

DTYPE_BITS = {"float32": 32.0, "float16": 16.0, "bfloat16": 16.0}


def parse_ts(value: str | datetime | None) -> datetime | None:
    """A catalog timestamp (UTC text as SQLite stores it, or PostgreSQL's datetime) as an
    aware datetime."""
    if not value:
        return None
    dt = value if isinstance(value, datetime) else datetime.fromisoformat(value)
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
    variant: str  # "4bit-g64", "mxfp4", "mixed_3_6-g64", or the dtype of an unquantized model
    bits_per_weight: float | None
    size_bytes: int | None
    synthetic: bool
    family: str = ""  # the root model's name
    method: str | None = None  # rtn, awq, gptq, dwq, dynamic; None: not quantized

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
class AccuracyFigures:
    """A model's newest eval run: task accuracy, its 95% interval, and the drop against
    the family's base on the same items (None when the base has no such run)."""

    run_id: int
    accuracy: float
    low: float | None
    high: float | None
    drop: float | None
    items: int
    tasks: tuple[str, ...]


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
    accuracy: AccuracyFigures | None = None

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
    """One adapter as the report shows it. The figures are the ``Adapter`` row's own columns
    (same names, read by name: :func:`finetune_runs`), the curves its step and validation
    rows: what the fine-tuning job stored, not a copy of it under other keys."""

    job_id: int | None
    model: str  # the base model it trained
    output: str  # the adapter
    status: str
    iterations: int | None
    final_train_loss: float | None
    final_val_loss: float | None
    test_loss: float | None
    train_losses: list[tuple[int, float]]
    val_losses: list[tuple[int, float]]
    finished_at: datetime | None


# FinetuneRun fields that are not Adapter columns of the same name (a test keeps the rest so).
FINETUNE_RUN_DERIVED = ("model", "output", "train_losses", "val_losses", "finished_at")


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


def load_models(reader: Reader) -> dict[int, ModelInfo]:
    """Every model, with its family (the root of its lineage)."""
    rows = reader.report_models()
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
            variant=model_quant_label(r) or r["dtype"] or "?",
            bits_per_weight=bpw,
            size_bytes=r["size_bytes"],
            synthetic=bool(r["synthetic"]),
            family=by_id[root(r["id"])]["name"],
            method=quant_method(r),
        )
    return out


def load_systems(reader: Reader) -> dict[int, SystemFacts]:
    return {
        r.id: SystemFacts(
            r.id,
            r.host,
            r.chip,
            r.cpu,
            r.ram_bytes,
            f"{r.os_name} {r.os_version}",
            r.backend,
            r.mlx_version,
            r.mlx_lm_version,
        )
        for r in reader.systems()
    }


def latest_quality(reader: Reader) -> dict[int, QualityFigures]:
    """Each model's newest quality run."""
    return {
        q.model_id: QualityFigures(
            q.id, q.perplexity, q.kl_mean, q.top1_agreement, q.base_name, parse_ts(q.created_at)
        )
        for q in reader.latest_quality_runs()
    }


def latest_accuracy(reader: Reader, models: dict[int, ModelInfo]) -> dict[int, AccuracyFigures]:
    """Each model's newest eval run, its drop against its family's root model: the drop
    the run stored (eval --base), else the root's newest run of the same items."""
    roots = {m.family: m.id for m in models.values() if m.name == m.family}
    out = {}
    for e in reader.latest_eval_runs():
        drop = e.accuracy_drop
        model = models.get(e.model_id)
        root = roots.get(model.family) if model else None
        if drop is None and root is not None and root != e.model_id:
            base = reader.eval_run_with_protocol(root, e.protocol)
            drop = None if base is None else base.accuracy - e.accuracy
        elif drop is None and root == e.model_id:
            drop = 0.0
        out[e.model_id] = AccuracyFigures(
            e.id, e.accuracy, e.accuracy_low, e.accuracy_high, drop, e.items, tuple(e.tasks)
        )
    return out


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
    all_models = load_models(reader)
    wanted = family_ids(reader, all_models, models) if models else None
    flt = ResultFilter(machines=tuple(machines), since=since)
    ids = None if wanted is None else [m.id for m in all_models.values() if m.family in wanted]
    groups_by_family: dict[str, list[dict[str, Any]]] = defaultdict(list)
    total = 0
    for row in reader.point_groups(flt, ids):
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
    quality = latest_quality(reader)
    accuracy = latest_accuracy(reader, all_models)
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
        fam.rows = _variant_rows(reader, at_head, all_models, quality, accuracy)
        fam.rows.sort(key=lambda v: (-(v.model.bits_per_weight or 0), v.model.name, v.host))
        measured = {v.model.id for v in fam.rows}
        fam.unmeasured = [m for m in members if m.id not in measured]
        fam.depth_series = _depth_series(reader, groups, all_models)
        if head:
            fam.history = _history(reader, [m.id for m in members], head, flt, all_models)
        families.append(fam)
    finetunes = finetune_runs(reader, all_models)
    for fam in families:
        fam.finetunes = [run for family, run in finetunes if family == fam.name]
    jobs_since = jobs_since or since or now - timedelta(hours=24)
    return ReportData(
        generated_at=now,
        since=since,
        machines=tuple(machines),
        families=families,
        systems=load_systems(reader),
        jobs_since=jobs_since,
        jobs=recent_jobs(reader, jobs_since),
        total_runs=total,
    )


def _ci(run, metric: str) -> float | None:
    """A run's 95% CI half-width (bench jobs before the ci95 columns kept it in details)."""
    value = run.get(f"{metric}_ci95")
    return value if value is not None else (run.details or {}).get(f"{metric}_ci95")


def _variant_rows(reader: Reader, groups, all_models, quality, accuracy) -> list[VariantFigures]:
    runs = reader.bench_runs([g["last_id"] for g in groups])
    rows = []
    for g in groups:
        r = runs[g["last_id"]]
        model = all_models[g["model_id"]]
        rows.append(
            VariantFigures(
                model=model,
                host=g["host"],
                system_id=r.system_id,
                run_id=r.id,
                point=dict(zip(POINT_FIELDS, g["point"], strict=True)),
                trials=r.trials,
                runs=g["runs"],
                prompt_tps=r.prompt_tps_mean,
                prompt_tps_std=r.prompt_tps_std,
                prompt_tps_ci95=_ci(r, "prompt_tps"),
                generation_tps=r.generation_tps_mean,
                generation_tps_std=r.generation_tps_std,
                generation_tps_ci95=_ci(r, "generation_tps"),
                peak_memory_bytes=r.peak_memory_bytes,
                model_memory_bytes=r.model_memory_bytes,
                noisy=bool(r.noisy),
                created_at=parse_ts(r.created_at),
                quality=quality.get(model.id),
                accuracy=accuracy.get(model.id),
            )
        )
    return rows


def _depth_series(reader: Reader, groups, all_models) -> list[DepthSeries]:
    """Groups that differ only in depth, with at least two depths, as one series each."""
    di = POINT_FIELDS.index("depth")
    series: dict[tuple, list[dict]] = defaultdict(list)
    for g in groups:
        rest = g["point"][:di] + g["point"][di + 1 :]
        series[(g["model_id"], g["host"], rest)].append(g)
    wanted = {k: v for k, v in series.items() if len({g["point"][di] for g in v}) >= 2}
    runs = reader.bench_runs([g["last_id"] for v in wanted.values() for g in v])
    out = []
    for (model_id, host, rest), gs in sorted(wanted.items(), key=lambda kv: (kv[0][0], kv[0][1])):
        point = dict(zip([f for f in POINT_FIELDS if f != "depth"], rest, strict=True))
        pts = sorted(
            (
                DepthPoint(
                    g["point"][di],
                    runs[g["last_id"]].prompt_tps_mean,
                    runs[g["last_id"]].generation_tps_mean,
                )
                for g in gs
            ),
            key=lambda p: p.depth,
        )
        out.append(DepthSeries(all_models[model_id].name, host, point, pts))
    return out


def _history(reader, model_ids, head: tuple, flt: ResultFilter, all_models) -> list[HistoryPoint]:
    return [
        HistoryPoint(all_models[m].name, host, day, mlx, tps, n)
        for m, host, day, mlx, tps, n in reader.generation_history(flt, model_ids, head)
    ]


def finetune_runs(reader: Reader, all_models) -> list[tuple[str, FinetuneRun]]:
    """(family, run) for every adapter, with the losses its fine-tuning job stored."""
    adapters = reader.adapters()
    losses = reader.finetune_losses([a.id for a in adapters])
    same_named = [f.name for f in fields(FinetuneRun) if f.name not in FINETUNE_RUN_DERIVED]
    out = []
    for a in adapters:
        base = all_models.get(a.base_model_id)
        out.append(
            (
                base.family if base else a.base_model_name,
                FinetuneRun(
                    **{name: a[name] for name in same_named},
                    model=base.name if base else a.base_model_name,
                    output=a.name,
                    train_losses=losses[a.id]["train"],
                    val_losses=losses[a.id]["valid"],
                    finished_at=parse_ts(a.updated_at),
                ),
            )
        )
    return out


def recent_jobs(reader: Reader, since: datetime) -> list[JobLine]:
    """Jobs that finished since ``since``, plus the ones still queued or running."""
    out = []
    for j in reader.jobs_since(since):
        p = j.params or {}
        out.append(
            JobLine(
                j.id,
                j.kind,
                j.status,
                p.get("model") or p.get("base") or p.get("name"),
                parse_ts(j.submitted_at),
                parse_ts(j.started_at),
                parse_ts(j.finished_at),
                j.error,
                j.after_job_id,
            )
        )
    return out
