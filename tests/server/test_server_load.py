"""Load: 50 clients poll the queue page and /api/v1/jobs for 60 s while a real daemon runs
jobs on the same catalog. No request fails, every job still finishes (none lost, none
added), and the p95 latency is printed (run with -s to see it; never asserted)."""

from __future__ import annotations

import importlib.util
import json

import pytest

from benchmarks.server import poll
from tests.conftest import Daemon, run_mlxd

CLIENTS = 50
SECONDS = 60.0  # the figure
JOBS = 4
# The queue page is the dashboard's (mlxd/server/pages.py); the API's jobs list always.
PATHS = (["/"] if importlib.util.find_spec("mlxd.server.pages") else []) + ["/api/v1/jobs"]


@pytest.mark.daemon
def test_fifty_clients_polling_for_a_minute_leave_the_daemons_jobs_alone(server, tiny_model_dir):
    home = server.home
    run_mlxd("models", "add", str(tiny_model_dir), "--name", "load-tiny", home=home, check=True)
    daemon = Daemon(home).start()
    try:
        before = json.loads(run_mlxd("jobs", "list", "--json", home=home, check=True).stdout)
        ids = []
        for bits in ("4", "8", "4", "8")[:JOBS]:
            # a chain, so the jobs run one after another through most of the minute
            after = ["--after", str(ids[-1])] if ids else []
            proc = run_mlxd(
                "quantize",
                "load-tiny",
                "--bits",
                bits,
                "--name",
                f"load-q{len(ids)}",
                *after,
                home=home,
                check=True,
            )
            ids.append(int(proc.stdout.split()[2].rstrip(":")))  # "Queued job N: ..."
        result = poll(
            server.url,
            PATHS,
            clients=CLIENTS,
            seconds=SECONDS,
            headers={"Authorization": f"Bearer {server.tokens['viewer']}"},
        )
        print(
            f"\nload: {CLIENTS} clients x {SECONDS:g} s, {result['requests']} requests, "
            f"p50 {result['p50_s']:.3f} s, p95 {result['p95_s']:.3f} s, "
            f"max {result['max_s']:.3f} s ({result['max_started_at_s']:.1f} s in); "
            f"{json.dumps(result['by_path'])}"
        )
        assert result["errors"] == [], result["errors"][:5]
        assert result["requests"] >= CLIENTS * 10  # each client kept polling
        waited = run_mlxd(
            "jobs", "wait", *map(str, ids), "--wait-timeout", "300", home=home, timeout=330
        )
        assert waited.returncode == 0, waited.stdout + waited.stderr
        after = json.loads(run_mlxd("jobs", "list", "--json", home=home, check=True).stdout)
        assert len(after) == len(before) + JOBS  # nothing lost, nothing doubled
        done = {j["id"]: j for j in after if j["id"] in ids}
        assert [done[i]["status"] for i in ids] == ["succeeded"] * JOBS
        assert all(done[i]["attempts"] == 1 for i in ids)  # no job was interrupted
    finally:
        daemon.stop()
