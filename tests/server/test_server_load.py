"""Load: 50 clients poll the queue page and /api/v1/jobs for 60 s while a real daemon runs
jobs on the same catalog, queued through the API every few seconds. No request fails, every
job still finishes at its first attempt (none lost, none added), and the p95 latency is
printed (run with -s to see it; never asserted)."""

from __future__ import annotations

import importlib.util
import json
import threading
import time

import pytest
from prometheus_client.parser import text_string_to_metric_families

from benchmarks.server import poll
from tests.conftest import Daemon, run_mlxd

CLIENTS = 50
SECONDS = 60.0  # the figure
EVERY_S = 6.0  # a new job this often while the clients poll: jobs run through the minute
# The queue page is the dashboard's (mlxd/server/pages.py); the API's jobs list always.
PATHS = (["/"] if importlib.util.find_spec("mlxd.server.pages") else []) + ["/api/v1/jobs"]


def _submitter(server, stop: threading.Event, ids: list[int], seen: dict[str, float]) -> None:
    """Queue a quantize through the API every EVERY_S seconds (as the submitter), and read
    /metrics between: the most memory in use and jobs running the daemon reported."""
    with server.client("submitter") as api, server.client("viewer") as viewer:
        while not stop.is_set():
            r = api.post(
                "/api/v1/jobs/quantize",
                json={
                    "model": "load-tiny",
                    "bits": 4 + 4 * (len(ids) % 2),
                    "name": f"lq{len(ids)}",
                },
            )
            if r.status_code != 201:
                seen["refused"] = r.text  # the test fails on it
                return
            ids.extend(r.json()["job_ids"])
            deadline = time.monotonic() + EVERY_S
            while time.monotonic() < deadline and not stop.wait(1.0):
                for family in text_string_to_metric_families(viewer.get("/metrics").text):
                    for sample in family.samples:
                        if sample.name in ("mlxd_memory_in_use_bytes", "mlxd_running_jobs"):
                            seen[sample.name] = max(seen.get(sample.name, 0), sample.value)


@pytest.mark.daemon
def test_fifty_clients_polling_for_a_minute_leave_the_daemons_jobs_alone(server, tiny_model_dir):
    home = server.home
    run_mlxd("models", "add", str(tiny_model_dir), "--name", "load-tiny", home=home, check=True)
    daemon = Daemon(home).start()
    stop = threading.Event()
    ids: list[int] = []
    seen: dict[str, float] = {}
    try:
        before = json.loads(run_mlxd("jobs", "list", "--json", home=home, check=True).stdout)
        submitter = threading.Thread(target=_submitter, args=(server, stop, ids, seen))
        submitter.start()
        try:
            result = poll(
                server.url,
                PATHS,
                clients=CLIENTS,
                seconds=SECONDS,
                headers={"Authorization": f"Bearer {server.tokens['viewer']}"},
            )
        finally:
            stop.set()
            submitter.join(30)
        print(
            f"\nload on {PATHS}: {CLIENTS} clients x {SECONDS:g} s, {result['requests']} "
            f"requests, p50 {result['p50_s']:.3f} s, p95 {result['p95_s']:.3f} s, "
            f"max {result['max_s']:.3f} s ({result['max_started_at_s']:.1f} s in); "
            f"{json.dumps(result['by_path'])}; {len(ids)} jobs queued meanwhile; "
            f"/metrics saw at most {seen}"
        )
        assert result["errors"] == [], result["errors"][:5]
        assert "refused" not in seen, seen
        assert result["requests"] >= CLIENTS * 10  # each client kept polling
        assert len(ids) >= SECONDS / EVERY_S - 2  # the submits were not starved either
        waited = run_mlxd(
            "jobs", "wait", *map(str, ids), "--wait-timeout", "300", home=home, timeout=330
        )
        assert waited.returncode == 0, waited.stdout + waited.stderr
        after = json.loads(
            run_mlxd("jobs", "list", "--limit", "0", "--json", home=home, check=True).stdout
        )
        assert len(after) == len(before) + len(ids)  # nothing lost, nothing doubled
        done = {j["id"]: j for j in after if j["id"] in ids}
        assert [done[i]["status"] for i in ids] == ["succeeded"] * len(ids)
        assert all(done[i]["attempts"] == 1 for i in ids)  # no job was interrupted
        assert {done[i]["submitted_by"] for i in ids} == {server.users["submitter"]}
    finally:
        stop.set()
        daemon.stop()
