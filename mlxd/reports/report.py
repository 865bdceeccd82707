"""A report as sections of paragraphs and tables, built once and rendered as Markdown or HTML.

The figures come from ``mlxd.reports.data``; this module decides what a reader sees: per
model family a precision table (like mlx-lm's BENCHMARKS.md), the machines the figures came
from, a recommendation, depth sweeps, fine-tuning losses, regressions, and the recent jobs.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from mlxd.catalog.read import Reader
from mlxd.reports.data import Family, ReportData, build_report
from mlxd.reports.recommend import Recommendation, recommend
from mlxd.reports.regressions import Change, find_changes
from mlxd.vocab import fmt

PM_NOTE = (
    "± is the half-width of the 95% confidence interval of the mean over the trials "
    "(as in `mlxd results --compare`); ~ marks a noisy run (a coefficient of variation "
    "above the bench job's threshold)."
)


@dataclass
class Cell:
    text: str
    sort: float | str | None = None  # what a click on the header sorts by (HTML)


@dataclass
class Table:
    id: str
    headers: list[str]
    rows: list[list[Cell]]


@dataclass
class Section:
    title: str
    level: int = 2
    blocks: list[str | Table] = field(default_factory=list)  # paragraphs and tables, in order
    family: Family | None = None  # the HTML report draws this family's charts here


@dataclass
class Report:
    title: str
    data: ReportData
    sections: list[Section]
    recommendations: dict[str, Recommendation]
    changes: list[Change]


def c(text: object, sort: float | str | None = None) -> Cell:
    return Cell("" if text is None else str(text), sort)


def make_report(
    reader: Reader,
    *,
    models: tuple[str, ...] = (),
    since: datetime | None = None,
    machines: tuple[str, ...] = (),
    now: datetime | None = None,
    title: str = "mlxd performance report",
) -> Report:
    data = build_report(reader, models=models, since=since, machines=machines, now=now)
    changes = find_changes(reader, models=models, since=since, machines=machines)
    names = {m.name for f in data.families for m in f.models}
    changes = [ch for ch in changes if ch.model in names]
    recs = {}
    for fam in data.families:
        # The budget: the memory of the machine the figures came from.
        hosts = Counter(v.host for v in fam.rows)
        ram = None
        if hosts:
            host = hosts.most_common(1)[0][0]
            ram = (
                max((s.ram_bytes or 0 for s in data.systems.values() if s.host == host), default=0)
                or None
            )
        recs[fam.name] = recommend(fam, data.systems, memory_bytes=ram)
    sections = [_overview(data)]
    for fam in data.families:
        sections.append(_family_section(fam, data, recs[fam.name], changes))
    sections.append(_systems_section(data))
    sections.append(_regressions_section(changes))
    sections.append(_jobs_section(data))
    return Report(title, data, sections, recs, changes)


def _overview(data: ReportData) -> Section:
    s = Section("Overview")
    where = f" on {', '.join(data.machines)}" if data.machines else ""
    window = f" since {fmt.stamp(data.since)}" if data.since else ""
    s.blocks.append(
        f"Generated {fmt.stamp(data.generated_at)}: {len(data.families)} model(s), "
        f"{data.total_runs:,} benchmark run(s){window}{where}."
    )
    return s


def _family_section(fam: Family, data: ReportData, rec: Recommendation, changes) -> Section:
    s = Section(f"Model: {fam.name}", family=fam)
    if fam.point:
        s.blocks.append(
            f"Benchmark point: {fmt.point_label(fam.point)} (prompt {fam.point['prompt_tokens']}"
            f" tokens, generate {fam.point['gen_tokens']}), the newest run per variant and "
            f"machine. {PM_NOTE}"
        )
    if any(m.synthetic for m in fam.models):
        s.blocks.append(
            "Random weights (synthetic model): speeds and memory are real for this shape; "
            "quality figures are meaningless."
        )
    sys_ids = sorted({v.system_id for v in fam.rows})
    sys_label = {sid: f"S{sid}" for sid in sys_ids}
    rows = []
    for v in fam.rows:
        q = v.quality
        noisy = " ~" if v.noisy else ""
        rows.append(
            [
                c(v.model.variant),
                c(v.model.method or ""),
                c(v.model.name),
                c(fmt.num(v.model.bits_per_weight, 2), v.model.bits_per_weight),
                c(fmt.size(v.model.size_bytes), v.model.size_bytes),
                c(fmt.pm(v.prompt_tps, v.prompt_tps_ci95) + noisy, v.prompt_tps),
                c(fmt.pm(v.generation_tps, v.generation_tps_ci95) + noisy, v.generation_tps),
                c(fmt.size(v.peak_memory_bytes), v.peak_memory_bytes),
                c(fmt.sig(q.perplexity) if q else "", q.perplexity if q else None),
                c(
                    fmt.sig(q.kl_mean, 3) if q and q.kl_mean is not None else "",
                    q.kl_mean if q else None,
                ),
                c(fmt.pct(q.top1_agreement) if q else "", q.top1_agreement if q else None),
                c(_accuracy_cell(v.accuracy), v.accuracy.accuracy if v.accuracy else None),
                c(v.trials, v.trials),
                c(f"{v.host} ({sys_label[v.system_id]})", v.host),
                c(v.run_id, v.run_id),
            ]
        )
    if rows:
        s.blocks.append(
            Table(
                f"precision-{_slug(fam.name)}",
                [
                    "Variant",
                    "Method",
                    "Model",
                    "Bits/weight",
                    "Size",
                    "Prompt tok/s",
                    "Generation tok/s",
                    "Peak memory",
                    "Perplexity",
                    "KL vs base",
                    "Top-1 agree",
                    "Accuracy",
                    "Trials",
                    "Machine",
                    "Run",
                ],
                rows,
            )
        )
        tasks = sorted({t for v in fam.rows if v.accuracy for t in v.accuracy.tasks})
        if tasks:
            s.blocks.append(
                f"Accuracy: the newest eval run ({', '.join(tasks)}), 95% interval, and the "
                "drop in points against the base on the same items."
            )
        bases = sorted({v.quality.base for v in fam.rows if v.quality and v.quality.base})
        if bases:
            s.blocks.append(f"KL and top-1 agreement are against {', '.join(bases)}.")
        s.blocks.append(
            "Machines: "
            + "; ".join(f"{sys_label[sid]} = {data.systems[sid].label}" for sid in sys_ids)
            + "."
        )
    else:
        s.blocks.append(
            f"No benchmark runs yet. Queue some with `mlxd sweep {fam.name} --bits 4,6,8` "
            f"or `mlxd bench {fam.name}`."
        )
    if fam.unmeasured and fam.point:
        names = ", ".join(m.name for m in fam.unmeasured)
        s.blocks.append(
            f"Not measured at {fmt.point_label(fam.point)}: {names} "
            f"(`mlxd bench NAME -p {fam.point['prompt_tokens']} -g {fam.point['gen_tokens']}`)."
        )
    s.blocks.append("Recommendation: " + " ".join(rec.lines))
    if fam.depth_series:
        s.blocks.append("Speed against context depth (tokens already in the KV cache):")
        rows = []
        for ser in fam.depth_series:
            for p in ser.points:
                rows.append(
                    [
                        c(ser.model),
                        c(ser.host),
                        c(fmt.point_label(ser.point)),
                        c(p.depth, p.depth),
                        c(fmt.num(p.prompt_tps), p.prompt_tps),
                        c(fmt.num(p.generation_tps), p.generation_tps),
                    ]
                )
        s.blocks.append(
            Table(
                f"depth-{_slug(fam.name)}",
                ["Model", "Machine", "Point", "Depth", "Prompt tok/s", "Generation tok/s"],
                rows,
            )
        )
    if fam.finetunes:
        s.blocks.append("Fine-tuning runs:")
        rows = [
            [
                c(f.job_id, f.job_id),
                c(f.model),
                c(f.output or ""),
                c(f.iterations, f.iterations),
                c(fmt.sig(f.final_train_loss), f.final_train_loss),
                c(fmt.sig(f.final_val_loss), f.final_val_loss),
                c(fmt.stamp(f.finished_at)),
            ]
            for f in fam.finetunes
        ]
        s.blocks.append(
            Table(
                f"finetune-{_slug(fam.name)}",
                [
                    "Job",
                    "Model",
                    "Output",
                    "Iterations",
                    "Final train loss",
                    "Final val loss",
                    "Finished",
                ],
                rows,
            )
        )
    mine = [ch for ch in changes if ch.model in {m.name for m in fam.models}]
    if mine:
        slower = sum(ch.verdict == "slower" for ch in mine)
        s.blocks.append(
            f"Speed changes beyond the noise: {len(mine)} ({slower} slower); see Regressions."
        )
    return s


def _accuracy_cell(a) -> str:
    if a is None:
        return ""
    ci = f" [{fmt.pct(a.low)}, {fmt.pct(a.high)}]" if a.low is not None else ""
    drop = f" ({(-a.drop or 0.0) * 100:+.1f} pt)" if a.drop else ""
    return f"{fmt.pct(a.accuracy)}{ci}{drop}"


def _systems_section(data: ReportData) -> Section:
    used = sorted({v.system_id for f in data.families for v in f.rows})
    s = Section("Machines and software")
    rows = []
    for sid in used:
        sy = data.systems[sid]
        rows.append(
            [
                c(f"S{sid}", sid),
                c(sy.host),
                c(sy.chip or sy.cpu),
                c(fmt.size(sy.ram_bytes), sy.ram_bytes),
                c(sy.os),
                c(sy.backend),
                c(sy.mlx_version),
                c(sy.mlx_lm_version),
            ]
        )
    if rows:
        s.blocks.append(
            Table(
                "systems",
                ["System", "Host", "Chip", "Memory", "OS", "Backend", "mlx", "mlx-lm"],
                rows,
            )
        )
    else:
        s.blocks.append("No benchmark figures in this report.")
    return s


def _regressions_section(changes: list[Change]) -> Section:
    s = Section("Regressions")
    if not changes:
        s.blocks.append(
            "No speed change beyond the measured noise (95% confidence intervals that do not "
            "overlap) between software versions on any machine."
        )
        return s
    s.blocks.append(
        "Speed changes between two mlx / mlx-lm versions on one machine whose 95% "
        "confidence intervals (trials pooled over the runs) do not overlap."
    )
    rows = []
    for ch in changes:
        label = "generation tok/s" if ch.metric == "generation_tps" else "prompt tok/s"
        rows.append(
            [
                c(ch.verdict),
                c(ch.model),
                c(ch.host),
                c(fmt.point_label(ch.point)),
                c(label),
                c(ch.before),
                c(ch.after),
                c(fmt.pm(ch.a.mean, ch.a.ci95), ch.a.mean),
                c(fmt.pm(ch.b.mean, ch.b.ci95), ch.b.mean),
                c(f"{ch.change_pct:+.1f}%", ch.change_pct),
                c(fmt.stamp(ch.when)),
            ]
        )
    s.blocks.append(
        Table(
            "regressions",
            [
                "Verdict",
                "Model",
                "Machine",
                "Point",
                "Metric",
                "Before",
                "After",
                "Before mean",
                "After mean",
                "Change",
                "When",
            ],
            rows,
        )
    )
    return s


def _jobs_section(data: ReportData) -> Section:
    s = Section(f"Jobs since {fmt.stamp(data.jobs_since)}")
    if not data.jobs:
        s.blocks.append("No jobs ran in this period.")
        return s
    counts = Counter(j.status for j in data.jobs)
    spent = sum(j.duration_s or 0 for j in data.jobs)
    s.blocks.append(
        ", ".join(f"{n} {status}" for status, n in sorted(counts.items()))
        + f"; {fmt.duration(spent)} of job time."
    )
    rows = []
    for j in data.jobs:
        wait = (
            f" (waits on job {j.after_job_id})" if j.status == "queued" and j.after_job_id else ""
        )
        rows.append(
            [
                c(j.id, j.id),
                c(j.kind),
                c(j.model or ""),
                c(j.status + wait),
                c(fmt.duration(j.duration_s), j.duration_s),
                c(j.error or ""),
                c(fmt.stamp(j.finished_at)),
            ]
        )
    s.blocks.append(
        Table("jobs", ["Job", "Kind", "Model", "Status", "Time", "Reason", "Finished"], rows)
    )
    return s


def _slug(name: str) -> str:
    return "".join(ch if ch.isalnum() else "-" for ch in name.lower()).strip("-")


def default_path(out_dir: Path, fmt_name: str, now: datetime) -> Path:
    """``reports/mlxd-report-2026-12-02.md``; a second one that day gets ``-2``, ``-3``..."""
    base = f"mlxd-report-{now.astimezone().strftime('%Y-%m-%d')}"
    path = out_dir / f"{base}.{fmt_name}"
    n = 1
    while path.exists():
        n += 1
        path = out_dir / f"{base}-{n}.{fmt_name}"
    return path
