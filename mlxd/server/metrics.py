"""Prometheus metrics at ``GET /metrics``: the shared catalog as the team sees it.

Nothing is counted in the server's memory: a custom collector reads the catalog through
``Reader`` at every scrape, so each host's server reports the same figures (the jobs, runs
and machine rows every daemon writes), a restarted server loses nothing, and two servers on
one PostgreSQL catalog agree. The figures:

- ``mlxd_jobs{state,pool}``: jobs by state and pool (every state listed, 0 included);
- ``mlxd_job_queue_wait_seconds{kind}`` (submitted -> started) and
  ``mlxd_job_run_seconds{kind}`` (started -> finished): histograms over the catalog's jobs;
- ``mlxd_running_jobs{host}``;
- ``mlxd_generation_tokens_per_second`` / ``mlxd_prompt_tokens_per_second`` with the
  model, the host and the benchmark point as labels: the newest run's means;
- ``mlxd_daemon_heartbeat_age_seconds{host}``, ``mlxd_daemon_up{host}`` (heartbeat within
  its lease and not stopped);
- ``mlxd_memory_budget_bytes{host}`` and ``mlxd_memory_in_use_bytes{host}`` (what the
  daemon's running jobs hold of it, by admission's estimates, as of its last heartbeat);
- ``mlxd_catalog_up`` (0 when the catalog did not answer: the other figures are then
  missing, not zero), ``mlxd_catalog_scrape_seconds``, and the server's own ``process_*``.

Access follows Prometheus practice: the endpoint is read like every other page, so a scrape
job sends a viewer token (``authorization: {credentials: TOKEN}``, i.e. ``Authorization:
Bearer TOKEN``), or nothing when the server runs with ``--public-read``.
"""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime

from fastapi import APIRouter, Request, Response
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.utils import floatToGoString

from mlxd.catalog.read import Reader
from mlxd.config import Paths
from mlxd.scheduling.placement import live_machines
from mlxd.server.auth import CanRead
from mlxd.vocab import settings
from mlxd.vocab.choices import BENCH_POINT_KEYS

log = logging.getLogger("mlxd.server.metrics")

JOB_STATES = ("queued", "running", "succeeded", "failed", "cancelled")
# Upper bounds in seconds: a job waits seconds to hours (overnight) and runs as long.
WAIT_BUCKETS = (1, 5, 15, 60, 300, 900, 3600, 4 * 3600, 12 * 3600)
RUN_BUCKETS = (5, 30, 60, 300, 900, 1800, 3600, 2 * 3600, 4 * 3600, 12 * 3600)

router = APIRouter()


class CatalogCollector:
    """A prometheus_client collector that reads ``paths``' catalog when scraped."""

    def __init__(self, paths: Paths):
        self.paths = paths

    def collect(self):
        start = time.perf_counter()
        try:
            with Reader(self.paths) as reader:
                families = list(self._families(reader))
        except Exception as e:  # noqa: BLE001  a scrape says the catalog is down, it never fails
            log.warning("metrics: the catalog did not answer (%s)", " ".join(str(e).split()))
            families, up = [], 0
        else:
            up = 1
        yield from families
        yield GaugeMetricFamily(
            "mlxd_catalog_up", "Whether the catalog answered this scrape", value=up
        )
        yield GaugeMetricFamily(
            "mlxd_catalog_scrape_seconds",
            "Seconds the catalog's reads took for this scrape",
            value=time.perf_counter() - start,
        )

    def _families(self, reader: Reader):
        jobs = GaugeMetricFamily("mlxd_jobs", "Jobs by state and pool", labels=["state", "pool"])
        counts = {(state, pool): n for state, pool, n in reader.job_counts()}
        pools = sorted({pool for _, pool in counts} or {"default"})
        for state in sorted(set(JOB_STATES) | {s for s, _ in counts}):
            for pool in pools:
                jobs.add_metric([state, pool], counts.get((state, pool), 0))
        yield jobs

        for span, name, what, bounds in (
            ("wait", "mlxd_job_queue_wait_seconds", "submitted to started", WAIT_BUCKETS),
            ("run", "mlxd_job_run_seconds", "started to finished", RUN_BUCKETS),
        ):
            hist = HistogramMetricFamily(name, f"Seconds a job took from {what}", labels=["kind"])
            for kind, n, total, *under in reader.job_durations(span, bounds):
                buckets = [(floatToGoString(b), c) for b, c in zip(bounds, under, strict=True)]
                hist.add_metric([kind], [*buckets, ("+Inf", n)], sum_value=total)
            yield hist

        running = GaugeMetricFamily("mlxd_running_jobs", "Jobs running per host", labels=["host"])
        for host, n in reader.running_jobs_per_host():
            running.add_metric([host or ""], n)
        yield running

        labels = ["model", "host", *BENCH_POINT_KEYS]
        gen = GaugeMetricFamily(
            "mlxd_generation_tokens_per_second",
            "Generation tokens/s of the newest run per model, host and benchmark point",
            labels=labels,
        )
        prompt = GaugeMetricFamily(
            "mlxd_prompt_tokens_per_second",
            "Prompt tokens/s of the newest run per model, host and benchmark point",
            labels=labels,
        )
        for run in _latest_speeds(reader):
            values = [run.model, run.host or "", *(_label(run[k]) for k in BENCH_POINT_KEYS)]
            if run.generation_tps_mean is not None:
                gen.add_metric(values, run.generation_tps_mean)
            if run.prompt_tps_mean is not None:
                prompt.add_metric(values, run.prompt_tps_mean)
        yield gen
        yield prompt

        machines = reader.machines()
        now = datetime.now(UTC)
        live = {m.host_id for m in live_machines(machines, settings.LEASE_TIMEOUT_S.get(), now)}
        age = GaugeMetricFamily(
            "mlxd_daemon_heartbeat_age_seconds",
            "Seconds since the host's daemon last wrote its machine row",
            labels=["host"],
        )
        up = GaugeMetricFamily(
            "mlxd_daemon_up",
            "Whether the host's daemon beats within its lease and has not stopped",
            labels=["host"],
        )
        budget = GaugeMetricFamily(
            "mlxd_memory_budget_bytes", "The daemon's memory budget for jobs", labels=["host"]
        )
        in_use = GaugeMetricFamily(
            "mlxd_memory_in_use_bytes",
            "Memory the daemon's running jobs hold of its budget (admission's estimates)",
            labels=["host"],
        )
        for m in machines:
            beat = m.heartbeat_at if m.heartbeat_at.tzinfo else m.heartbeat_at.replace(tzinfo=UTC)
            age.add_metric([m.host_id], max(0.0, (now - beat).total_seconds()))
            up.add_metric([m.host_id], 1 if m.host_id in live else 0)
            facts = m.facts or {}
            if isinstance(facts.get("memory_budget_bytes"), int | float):
                budget.add_metric([m.host_id], facts["memory_budget_bytes"])
            if isinstance(facts.get("memory_in_use_bytes"), int | float):
                in_use.add_metric([m.host_id], facts["memory_in_use_bytes"])
        yield from (age, up, budget, in_use)


# The newest speeds are a GROUP BY over every run (0.6 s at 100,000 runs on a slow disk):
# kept per catalog until a run is added or removed.
_speeds: dict[str, tuple[tuple, list]] = {}


def _latest_speeds(reader: Reader) -> list:
    where = str(reader.paths.home) + "|" + str(settings.DATABASE_URL.get() or "")
    mark = reader.bench_runs_mark()
    cached = _speeds.get(where)
    if cached is not None and cached[0] == mark:
        return cached[1]
    rows = reader.latest_speeds()
    _speeds[where] = (mark, rows)
    return rows


def _label(value) -> str:
    return "" if value is None else str(value)


def exposition(paths: Paths) -> bytes:
    """The text a scrape gets: the catalog's figures and this process's own."""
    registry = CollectorRegistry(auto_describe=False)
    ProcessCollector(registry=registry)
    registry.register(CatalogCollector(paths))
    return generate_latest(registry)


@router.get("/metrics", include_in_schema=False)
def metrics(request: Request, principal: CanRead) -> Response:
    """Prometheus' text format (a viewer token, or none with --public-read)."""
    return Response(exposition(request.app.state.paths), media_type=CONTENT_TYPE_LATEST)
