"""What each dashboard page shows, read through the catalog's ``Reader`` and the report
functions (``mlxd.reports``): the same figures the CLI prints, never computed a second way.
Plain functions of a Reader, so a page and its small JSON twin (the live parts) agree."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from mlxd.catalog.read import Reader
from mlxd.config import Paths
from mlxd.daemon import hosts
from mlxd.vocab import fmt

ENDED = ("succeeded", "failed", "cancelled")
# Terminal colours and cursor moves in a child's output (rich's progress lines): not text.
ANSI = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]")
LOG_TAIL_BYTES = 16_000
ENDED_SHOWN = 50  # the queue lists the newest ended jobs; `mlxd jobs list` has them all


def describe(job) -> str:
    """The job as ``jobs list`` says it ("quantize tiny -> tiny-4bit-g64"). A job's
    parameters never change: each is described once (the queue polls every second)."""
    key = (job.id, job.kind, str(job.submitted_at))
    text = _DESCRIBED.get(key)
    if text is None:
        from mlxd.jobs import UnknownJobKind, load_kind

        try:
            kind = load_kind(job.kind)
            text = kind.describe(kind.Spec.from_params(job.params))
        except (UnknownJobKind, TypeError, ValueError):
            text = job.kind
        if len(_DESCRIBED) > 10_000:
            _DESCRIBED.clear()
        _DESCRIBED[key] = text
    return text


_DESCRIBED: dict[tuple, str] = {}


@dataclass
class JobLine:
    """One job as the queue shows it."""

    id: int
    kind: str
    status: str
    what: str
    by: str | None
    pool: str
    progress: float  # 0..1
    message: str  # running: --wait's figures (trial i/n, step and loss, bytes); else the note
    submitted: str
    finished: str


def job_line(job, note: str = "") -> JobLine:
    return JobLine(
        id=job.id,
        kind=job.kind,
        status=job.status,
        what=describe(job),
        by=job.submitted_by,
        pool=job.pool,
        progress=float(job.progress or 0.0),
        message=note or job.error or job.message or "",
        submitted=fmt.stamp(_aware(job.submitted_at)),
        finished=fmt.stamp(_aware(job.finished_at)),
    )


def _aware(value) -> datetime | None:
    from mlxd.reports.data import parse_ts

    return parse_ts(value)


@dataclass
class Queue:
    running: list[JobLine]
    queued: list[JobLine]
    ended: list[JobLine]  # the last day's finished, failed and cancelled jobs, newest first
    more_ended: int = 0  # ended in the last day but not listed (past ENDED_SHOWN)
    rows: dict[int, Any] = field(default_factory=dict)  # id -> the job row (for permissions)


def queue(paths: Paths, reader: Reader, *, hours: float = 24, now: datetime | None = None):
    now = now or datetime.now(UTC)
    jobs = reader.jobs_since(now - timedelta(hours=hours))
    waits = hosts.wait_reasons(paths, reader, jobs)
    running = [job_line(j) for j in jobs if j.status == "running"]
    queued = [job_line(j, waits.get(j.id, "")) for j in jobs if j.status == "queued"]
    ended_rows = [j for j in reversed(jobs) if j.status in ENDED]
    ended = [job_line(j) for j in ended_rows[:ENDED_SHOWN]]
    shown = [j for j in jobs if j.status not in ENDED] + ended_rows[:ENDED_SHOWN]
    q = Queue(running, queued, ended, rows={j.id: j for j in shown})
    q.more_ended = max(0, len(ended_rows) - ENDED_SHOWN)
    return q


# -- one job ---------------------------------------------------------------------------------


def log_tail(paths: Paths, reader: Reader, job, limit: int = LOG_TAIL_BYTES) -> str:
    """The end of a job's log: its file when this host ran it, else the pieces its host
    shipped into the catalog (a shared catalog), as ``jobs logs`` reads them. The file's
    path comes from the catalog; one outside MLXD_HOME's logs is not opened."""
    from mlxd.daemon.hosts import host_id

    path = Path(job.log_path) if job.log_path else None
    if path is not None and job.host in (None, host_id()) and _inside(path, paths.logs):
        try:
            with open(path, "rb") as f:
                f.seek(0, 2)
                f.seek(max(0, f.tell() - limit))
                return ANSI.sub("", f.read().decode("utf-8", errors="replace"))
        except OSError:
            pass
    text = "".join(p.text for p in reader.job_log(job.id))
    return ANSI.sub("", text[-limit:])


def _inside(path: Path, folder: Path) -> bool:
    try:
        return path.resolve().is_relative_to(folder.resolve())
    except OSError:
        return False


def loss_points(reader: Reader, job) -> dict[str, list[list[float]]]:
    """A fine-tune's training (and validation) losses so far: [iteration, loss] pairs of the
    adapter(s) this job trains, as the catalog has them."""
    if job.kind != "finetune":
        return {}
    ids = [a.id for a in reader.adapters() if a.job_id == job.id]
    out: dict[str, list[list[float]]] = {"train": [], "valid": []}
    for curves in reader.finetune_losses(ids).values():
        for split in out:
            out[split] += [[it, loss] for it, loss in curves.get(split, [])]
    return out


def job_state(paths: Paths, reader: Reader, job_id: int) -> dict[str, Any]:
    """What the job page refreshes: status, progress, the one-line message, attempts, the
    log's tail and, for a fine-tune, its loss curve."""
    job = reader.job(job_id)
    waits = hosts.wait_reasons(paths, reader, [job])
    line = job_line(job, waits.get(job.id, ""))
    return {
        "id": job.id,
        "status": job.status,
        "progress": line.progress,
        "message": line.message,
        "attempts": f"{job.attempts} of {job.max_attempts}",
        "log": log_tail(paths, reader, job),
        "loss": loss_points(reader, job),
    }


def job_facts(job) -> list[tuple[str, Any]]:
    """The job's facts as ``jobs show`` lists them."""
    return [
        ("kind", job.kind),
        ("what", describe(job)),
        ("pool", job.pool),
        ("after job", job.after_job_id),
        ("attempts", f"{job.attempts} of {job.max_attempts}"),
        ("crashes", f"{job.crashes} ({job.crash_reason})" if job.crashes else None),
        ("interrupted", f"{job.interruptions} daemon stop(s)" if job.interruptions else None),
        ("priority", job.priority),
        ("timeout", f"{fmt.sig(float(job.timeout_s), 6)} s" if job.timeout_s else None),
        ("submitted", f"{fmt.stamp(_aware(job.submitted_at))} by {job.submitted_by}"),
        ("started", fmt.stamp(_aware(job.started_at)) if job.started_at else None),
        ("finished", fmt.stamp(_aware(job.finished_at)) if job.finished_at else None),
        ("host", job.host),
        ("result", ", ".join(f"{k}={v}" for k, v in (job.result or {}).items()) or None),
    ]


# -- models ----------------------------------------------------------------------------------


@dataclass
class ModelNode:
    row: Any
    label: str  # variant label: "4bit-g64", "float32"
    hub: Any  # its pulled snapshot (repo, commit), or None
    children: list[ModelNode] = field(default_factory=list)


def model_tree(reader: Reader) -> list[ModelNode]:
    """The catalog's models as lineage trees: base -> quantized / converted / fine-tuned."""
    from mlxd.vocab.choices import model_quant_label

    rows = reader.models()
    hubs = reader.hub_snapshots_by_model()
    nodes = {
        r.id: ModelNode(r, model_quant_label(r) or r.dtype or "", hubs.get(r.id)) for r in rows
    }
    roots = []
    for r in rows:
        parent = nodes.get(r.parent_id) if r.parent_id is not None else None
        (parent.children if parent is not None and r.parent_id != r.id else roots).append(
            nodes[r.id]
        )
    return roots


@dataclass
class Scatter:
    """One chart's points in SVG coordinates, with the Pareto front as a polyline."""

    id: str
    title: str
    x_label: str
    y_label: str
    points: list[dict[str, Any]]  # x, y (pixels), label, value text
    front: str  # "x,y x,y ..." of the Pareto front
    x_ticks: list[tuple[float, str]]
    y_ticks: list[tuple[float, str]]


W, H, PAD = 520, 300, 48


def scatter(chart_id: str, title: str, x_label: str, y_label: str, pts, labels) -> Scatter | None:
    """Place ``pts`` ((x, y) values) on a W x H plot; the front from the report's own
    ``pareto_front`` (lower x, higher y)."""
    from mlxd.reports.charts import pareto_front

    if not pts:
        return None
    xs, ys = [p[0] for p in pts], [p[1] for p in pts]
    x0, x1 = min(xs), max(xs)
    y0, y1 = 0.0, max(ys)
    x0, x1 = (x0 - 1, x1 + 1) if x0 == x1 else (x0 - 0.08 * (x1 - x0), x1 + 0.08 * (x1 - x0))
    y1 = y1 * 1.1 if y1 > 0 else 1.0

    def px(x: float) -> float:
        return round(PAD + (x - x0) / (x1 - x0) * (W - 2 * PAD), 1)

    def py(y: float) -> float:
        return round(H - PAD - (y - y0) / (y1 - y0) * (H - 2 * PAD), 1)

    points = [
        {"x": px(x), "y": py(y), "label": label, "value": f"{fmt.sig(x, 3)}, {fmt.sig(y, 3)}"}
        for (x, y), label in zip(pts, labels, strict=True)
    ]
    front = " ".join(f"{points[i]['x']},{points[i]['y']}" for i in pareto_front(list(pts)))
    ticks = 4
    x_ticks = [(px(x0 + k * (x1 - x0) / ticks), fmt.sig(x0 + k * (x1 - x0) / ticks, 3))
               for k in range(ticks + 1)]  # fmt: skip
    y_ticks = [(py(y0 + k * (y1 - y0) / ticks), fmt.sig(y0 + k * (y1 - y0) / ticks, 3))
               for k in range(ticks + 1)]  # fmt: skip
    return Scatter(chart_id, title, x_label, y_label, points, front, x_ticks, y_ticks)


@dataclass
class ModelPage:
    model: Any
    family: Any  # reports.data.Family, or None when nothing of it was measured
    recommendation: Any
    systems: dict
    charts: list[Scatter]
    others: list[str]  # models to compare with


def model_page(reader: Reader, ref: str) -> ModelPage:
    """A model's family (every variant side by side, at the report's headline point), the
    recommendation and the two charts, all from ``make_report``."""
    from mlxd.reports.charts import quality_points, speed_memory_points, variant_labels
    from mlxd.reports.report import make_report

    model = reader.model(ref)
    rep = make_report(reader, models=(model.name,))
    fam = rep.data.families[0] if rep.data.families else None
    charts = []
    if fam is not None:
        rows = speed_memory_points([fam])
        # The axis in the unit that suits its largest value, as the report's chart.
        largest = max((v.memory_needed_bytes for _, v in rows), default=1)
        unit, scale = next(
            (u, k) for u, k in (("GB", 1e9), ("MB", 1e6), ("KB", 1e3), ("B", 1)) if largest >= k
        )
        charts.append(
            scatter(
                "chart-speed-memory",
                "Generation speed against peak memory",
                f"peak memory ({unit})",
                "generation tok/s",
                [(v.memory_needed_bytes / scale, v.generation_tps) for _, v in rows],
                variant_labels([v for _, v in rows]),
            )
        )
        use_kl, pts, shown = quality_points(fam)
        charts.append(
            scatter(
                "chart-speed-quality",
                "Generation speed against quality",
                "KL divergence vs base" if use_kl else "perplexity",
                "generation tok/s",
                pts,
                variant_labels(shown),
            )
        )
    others = [m.name for m in reader.models() if m.id != model.id]
    return ModelPage(
        model=model,
        family=fam,
        recommendation=rep.recommendations.get(fam.name) if fam else None,
        systems=rep.data.systems,
        charts=[c for c in charts if c is not None],
        others=others,
    )


def variant_cells(v) -> dict[str, str]:
    """One variant's row of the model page, formatted as the report's table formats it."""
    q = v.quality
    return {
        "variant": v.model.variant,
        "model": v.model.name,
        "bits": fmt.num(v.model.bits_per_weight, 2),
        "size": fmt.size(v.model.size_bytes),
        "prompt": fmt.pm(v.prompt_tps, v.prompt_tps_ci95),
        "generation": fmt.pm(v.generation_tps, v.generation_tps_ci95),
        "peak": fmt.size(v.peak_memory_bytes),
        "perplexity": fmt.sig(q.perplexity) if q else "",
        "kl": fmt.sig(q.kl_mean, 3) if q and q.kl_mean is not None else "",
        "top1": fmt.pct(q.top1_agreement) if q else "",
        "trials": str(v.trials),
        "host": v.host,
    }


def comparison(reader: Reader, a: str, b: str):
    """``results --compare A B`` between two models: the rows, formatted as the CLI does."""
    from mlxd.reports.results import compare

    cmp = compare(reader, a, b, "model")
    rows = []
    for r in cmp.rows:
        rows.append(
            {
                "point": fmt.point_label(r.point),
                "metric": r.metric,
                "a": fmt.pm(r.a.mean, r.a.ci95, 2),
                "b": fmt.pm(r.b.mean, r.b.ci95, 2),
                "ratio": fmt.sig(r.ratio, 3),
                "verdict": r.verdict,
            }
        )
    return cmp, rows


# -- machines --------------------------------------------------------------------------------


def machines(paths: Paths, reader: Reader) -> list[dict[str, Any]]:
    """Each host as ``machines list`` shows it: state, pools, heartbeat, running jobs,
    memory."""
    from mlxd.vocab import settings

    lease_s = settings.LEASE_TIMEOUT_S.get()
    running: dict[str, list[int]] = {}
    for job in reader.jobs(["running"]):
        running.setdefault(job.host or "?", []).append(job.id)
    local = hosts.local_daemon_running(paths)
    now = datetime.now(UTC)
    out = []
    for m in reader.machines():
        beat = _aware(m.heartbeat_at)
        age = (now - beat).total_seconds()
        facts = m.facts or {}
        out.append(
            {
                "host": m.host_id,
                "hostname": m.hostname or "",
                "state": hosts.machine_state(m, lease_s, local_daemon=local, now=now),
                "pools": ", ".join(m.pools),
                "heartbeat": f"{fmt.stamp(beat)} ({fmt.duration(age)} ago)",
                "running": running.get(m.host_id, []),
                "workers": m.workers,
                "chip": facts.get("chip") or facts.get("cpu") or "",
                "ram": fmt.size(facts.get("ram_bytes")) if facts.get("ram_bytes") else "",
                "budget": fmt.size(facts.get("memory_budget_bytes"))
                if facts.get("memory_budget_bytes")
                else "",
                "backend": facts.get("backend") or "",
                "mlxd": m.mlxd_version or "",
            }
        )
    return out
