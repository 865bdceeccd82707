"""GET /metrics: the catalog's jobs, runs and machines in Prometheus' text format.

The catalog is filled with known rows (jobs of two kinds in three pools, with known wait and
run times, two hosts' machine rows, benchmark runs at two points) through the Store, on
SQLite and (with MLXD_TEST_DATABASE_URL) PostgreSQL; the scrape must count exactly them.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from prometheus_client.parser import text_string_to_metric_families

from mlxd.catalog.models import BenchRun, Job, Model, System
from mlxd.catalog.store import Store
from mlxd.config import paths as paths_of
from mlxd.server.metrics import exposition

NOW = datetime.now(UTC).replace(microsecond=0)

# (kind, status, pool, host, wait seconds or None (never started), run seconds or None)
JOBS = [
    ("bench", "succeeded", "default", "mac-a", 2, 40),
    ("bench", "succeeded", "default", "mac-a", 20, 400),
    ("bench", "failed", "default", "mac-b", 100, 3),
    ("quantize", "succeeded", "gpu", "mac-b", 0.5, 70),
    ("quantize", "running", "gpu", "mac-b", 4000, None),
    ("bench", "running", "default", "mac-a", 3, None),
    ("bench", "queued", "default", None, None, None),
    ("bench", "queued", "@mac-a", None, None, None),
    ("quantize", "cancelled", "default", None, None, None),
]


def fill(p) -> dict[str, int]:
    store = Store(p)
    try:
        with store.write() as s:
            for kind, status, pool, host, wait, run in JOBS:
                submitted = NOW - timedelta(hours=5)
                started = submitted + timedelta(seconds=wait) if wait is not None else None
                finished = started + timedelta(seconds=run) if run is not None else None
                if status == "cancelled":
                    finished = submitted + timedelta(seconds=1)
                s.add(
                    Job(
                        kind=kind,
                        status=status,
                        pool=pool,
                        host=host,
                        submitted_at=submitted,
                        started_at=started,
                        finished_at=finished,
                    )
                )
            sysrow = System(
                fingerprint="f-a",
                host="mac-a",
                os_name="Darwin",
                os_version="15",
                cpu="M3",
                backend="metal",
                python_version="3.11",
                mlx_version="0.32",
                mlx_lm_version="0.32",
                mlxd_version="0.1",
            )
            model = Model(name="tiny-4bit", path="/x/tiny-4bit", format="mlx", source="quantize")
            s.add_all([sysrow, model])
            s.flush()
            ids = {}
            # two runs at point A (the newer one counts), one at point B
            for i, (p_tok, gen_tps, prompt_tps) in enumerate(
                [(128, 50.0, 500.0), (128, 61.5, 640.0), (512, 44.0, 900.0)]
            ):
                run = BenchRun(
                    model_id=model.id,
                    system_id=sysrow.id,
                    created_at=NOW - timedelta(minutes=10 - i),
                    prompt_tokens=p_tok,
                    gen_tokens=64,
                    trials=3,
                    warmup=1,
                    generation_tps_mean=gen_tps,
                    prompt_tps_mean=prompt_tps,
                )
                s.add(run)
                s.flush()
                ids[i] = run.id
        store.machine_heartbeat(
            "mac-a",
            pools=["default"],
            facts={"memory_budget_bytes": 48_000_000_000, "memory_in_use_bytes": 0},
        )
        store.machine_heartbeat(
            "mac-b", pools=["gpu"], facts={"memory_budget_bytes": 96_000_000_000}
        )
        store.machine_heartbeat("mac-b", pools=["gpu"], fact_updates={"memory_in_use_bytes": 7e9})
        store.machine_stopped("mac-b")
        return ids
    finally:
        store.close()


def test_the_scrape_counts_what_the_catalog_holds(mlxd_home, catalog_backend):
    """One fill per backend (a PostgreSQL database costs a second), every figure checked."""
    p = paths_of(mlxd_home)
    ids = fill(p)
    samples = scrape(p)
    jobs_by_state_and_pool(samples)
    wait_and_run_histograms_by_kind(samples)
    newest_speed_per_model_and_point(samples)
    machines_heartbeat_and_memory(samples)
    # the speeds are kept between scrapes until the runs change: a newer run shows at once
    store = Store(p)
    try:
        with store.write() as s:
            run = s.get(BenchRun, ids[2])
            s.add(BenchRun(**(run.model_dump(exclude={"id"}) | {"generation_tps_mean": 47.0})))
    finally:
        store.close()
    point = dict(POINT, prompt_tokens="512")
    assert value(scrape(p), "mlxd_generation_tokens_per_second", **point) == 47.0


def scrape(p) -> dict:
    samples = {}
    for family in text_string_to_metric_families(exposition(p).decode()):
        for s in family.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return samples


POINT = dict(
    model="tiny-4bit",
    host="mac-a",
    gen_tokens="64",
    batch_size="1",
    depth="0",
    kv_bits="",
    prefill_step_size="",
    max_kv_size="",
)


def value(samples, name, **labels):
    return samples[(name, tuple(sorted(labels.items())))]


def jobs_by_state_and_pool(samples):
    for state in ("queued", "running", "succeeded", "failed", "cancelled"):
        for pool in ("default", "gpu", "@mac-a"):
            want = sum(1 for j in JOBS if j[1] == state and j[2] == pool)
            assert value(samples, "mlxd_jobs", state=state, pool=pool) == want, (state, pool)
    assert value(samples, "mlxd_running_jobs", host="mac-a") == 1
    assert value(samples, "mlxd_running_jobs", host="mac-b") == 1
    assert value(samples, "mlxd_catalog_up") == 1


def wait_and_run_histograms_by_kind(samples):
    waits = {k: [j[4] for j in JOBS if j[0] == k and j[4] is not None] for k in ("bench",)}
    bench = waits["bench"]  # 2, 20, 100, 3
    assert value(samples, "mlxd_job_queue_wait_seconds_count", kind="bench") == len(bench)
    assert value(samples, "mlxd_job_queue_wait_seconds_sum", kind="bench") == pytest.approx(
        sum(bench), abs=0.01
    )
    assert value(samples, "mlxd_job_queue_wait_seconds_bucket", kind="bench", le="5.0") == 2
    assert value(samples, "mlxd_job_queue_wait_seconds_bucket", kind="bench", le="60.0") == 3
    assert value(samples, "mlxd_job_queue_wait_seconds_bucket", kind="quantize", le="1.0") == 1
    assert value(samples, "mlxd_job_queue_wait_seconds_bucket", kind="quantize", le="+Inf") == 2
    # run time: finished jobs only (the running ones and the cancelled-while-queued are not)
    assert value(samples, "mlxd_job_run_seconds_count", kind="bench") == 3
    assert value(samples, "mlxd_job_run_seconds_sum", kind="bench") == pytest.approx(443, abs=0.01)
    assert value(samples, "mlxd_job_run_seconds_bucket", kind="bench", le="5.0") == 1
    assert value(samples, "mlxd_job_run_seconds_bucket", kind="bench", le="300.0") == 2
    assert value(samples, "mlxd_job_run_seconds_count", kind="quantize") == 1


def newest_speed_per_model_and_point(samples):
    a, b = dict(POINT, prompt_tokens="128"), dict(POINT, prompt_tokens="512")
    assert value(samples, "mlxd_generation_tokens_per_second", **a) == 61.5  # the newer run
    assert value(samples, "mlxd_prompt_tokens_per_second", **a) == 640.0
    assert value(samples, "mlxd_generation_tokens_per_second", **b) == 44.0
    assert sum(1 for name, _ in samples if name == "mlxd_generation_tokens_per_second") == 2


def machines_heartbeat_and_memory(samples):
    assert 0 <= value(samples, "mlxd_daemon_heartbeat_age_seconds", host="mac-a") < 60
    assert value(samples, "mlxd_daemon_up", host="mac-a") == 1
    assert value(samples, "mlxd_daemon_up", host="mac-b") == 0  # stopped
    assert value(samples, "mlxd_memory_budget_bytes", host="mac-b") == 96e9
    assert value(samples, "mlxd_memory_in_use_bytes", host="mac-b") == 7e9
    assert value(samples, "mlxd_memory_in_use_bytes", host="mac-a") == 0


@pytest.mark.sqlite_only
def test_a_catalog_that_does_not_answer_is_catalog_up_0(tmp_path, monkeypatch):
    monkeypatch.setenv("MLXD_DATABASE_URL", "postgresql://nobody@127.0.0.1:9/none")
    text = exposition(paths_of(tmp_path / "home")).decode()
    assert "mlxd_catalog_up 0.0" in text
    assert "mlxd_jobs{" not in text


@pytest.mark.sqlite_only
def test_the_route_reads_like_any_page_a_viewer_token_or_public_read(mlxd_home):
    """Prometheus practice: the scrape job sends a token (`authorization: credentials`), or
    the server is --public-read."""
    from fastapi.testclient import TestClient

    from mlxd.server.app import create_app
    from mlxd.server.users import add_user

    p = paths_of(mlxd_home)
    fill(p)
    token = add_user(p, "scraper", "viewer")
    with TestClient(create_app(p, secret_key=b"k" * 32)) as client:
        assert client.get("/metrics").status_code == 401
        assert client.get("/metrics", headers={"Authorization": "Bearer nope"}).status_code == 401
        r = client.get("/metrics", headers={"Authorization": f"Bearer {token}"})
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
        assert 'mlxd_jobs{pool="gpu",state="running"} 1.0' in r.text
        assert "process_resident_memory_bytes" in r.text  # the server's own
    with TestClient(create_app(p, public_read=True, secret_key=b"k" * 32)) as client:
        assert client.get("/metrics").status_code == 200
