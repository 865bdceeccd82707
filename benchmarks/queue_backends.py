"""Queue throughput and submit-to-start latency: SQLite against PostgreSQL, one consumer
process against three, side by side in one run (issue 13).

Each "daemon" here is a process running mlxd's own huey queue (``mlxd.scheduling.queue``) with
a handler that does a job's catalog bookkeeping through the Store (claim, then finish)
and no MLX: what a trivial job costs the queue and the catalog, without the child process
that every real job starts (whose ~1 s of mlx import would hide the queue's cost).

    .venv/bin/python benchmarks/queue_backends.py [--jobs 1000] [--pg postgresql://...]

The PostgreSQL runs need a server (default: postgres@127.0.0.1:5432); each run gets a fresh
database, dropped afterwards.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

CONSUMER = r"""
import os, sys, threading
from huey.consumer import Consumer
from mlxd.catalog.store import Store
from mlxd.config import paths
from mlxd.scheduling import queue

p = paths()
store = Store(p)
def handle(job_id):
    if store.claim_job(job_id, host=os.environ["BENCH_HOST"], daemon_pid=os.getpid()):
        store.finish_job(job_id, "succeeded")
queue.set_handler(handle)
c = Consumer(queue.huey_for(p), workers=1, worker_type="thread", initial_delay=0.05,
             backoff=1.5, max_delay=0.2, periodic=False)
print("ready", flush=True)
c.run()
"""


def _fresh_pg(base: str) -> tuple[str, callable]:
    import psycopg

    name = f"mlxd_bench_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(base, autocommit=True) as con:
        con.execute(f'create database "{name}" template template0')
    url = base.rsplit("/", 1)[0] + f"/{name}"

    def drop():
        with psycopg.connect(base, autocommit=True) as con:
            con.execute(f'drop database if exists "{name}" with (force)')

    return url, drop


def run_case(backend: str, daemons: int, jobs: int, pg_base: str) -> dict:
    home = Path(tempfile.mkdtemp(prefix="mlxd-qbench-"))
    env = dict(os.environ, MLXD_HOME=str(home))
    env.pop("MLXD_DATABASE_URL", None)
    drop = None
    if backend == "postgresql":
        url, drop = _fresh_pg(pg_base)
        env["MLXD_DATABASE_URL"] = url
    os.environ.update({k: v for k, v in env.items() if k.startswith("MLXD_")})
    if backend == "sqlite":
        os.environ.pop("MLXD_DATABASE_URL", None)
    from mlxd.catalog.store import Store
    from mlxd.config import paths
    from mlxd.scheduling import queue

    queue.get_huey.cache_clear()
    store = Store(paths(home))
    procs = []
    try:
        for i in range(daemons):
            proc = subprocess.Popen(
                [sys.executable, "-c", CONSUMER],
                stdout=subprocess.PIPE,
                env=dict(env, BENCH_HOST=f"h{i}"),
                text=True,
            )
            assert proc.stdout.readline().strip() == "ready"
            procs.append(proc)
        # Latency: one job at a time into an idle queue, submit -> claimed.
        latencies = []
        for _ in range(10):
            job = store.submit_job("probe", {})
            t0 = time.perf_counter()
            queue.enqueue(paths(home), job.id)
            while store.get_job(job.id).status == "queued":
                time.sleep(0.002)
            latencies.append(time.perf_counter() - t0)
        # Throughput: submit every job (catalog row + queue entry), then wait for all.
        t0 = time.perf_counter()
        ids = []
        for _ in range(jobs):
            job = store.submit_job("probe", {})
            queue.enqueue(paths(home), job.id)
            ids.append(job.id)
        while store.list_jobs(["queued", "running"]):
            time.sleep(0.05)
        elapsed = time.perf_counter() - t0
        done = store.list_jobs(["succeeded"])
        hosts = {j.host for j in done if j.id in set(ids)}
        return {
            "backend": backend,
            "daemons": daemons,
            "jobs_per_s": jobs / elapsed,
            "latency_median_ms": statistics.median(latencies) * 1000,
            "hosts_used": len(hosts),
            "ran_once": len(done) == jobs + 10 and all(j.attempts == 1 for j in done),
        }
    finally:
        for proc in procs:
            proc.terminate()
            proc.wait(30)
        store.close()
        queue.get_huey.cache_clear()
        if drop:
            drop()
        shutil.rmtree(home, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--jobs", type=int, default=1000)
    ap.add_argument("--pg", default="postgresql://postgres@127.0.0.1:5432/postgres")
    args = ap.parse_args()
    rows = []
    for backend in ("sqlite", "postgresql"):
        for daemons in (1, 3):
            rows.append(run_case(backend, daemons, args.jobs, args.pg))
            r = rows[-1]
            print(
                f"{r['backend']:<11} {r['daemons']} daemon(s): {r['jobs_per_s']:7.1f} jobs/s, "
                f"submit-to-start median {r['latency_median_ms']:6.1f} ms, "
                f"hosts used {r['hosts_used']}, each job once: {r['ran_once']}",
                flush=True,
            )
    base = rows[0]["jobs_per_s"]
    print("\nthroughput relative to SQLite with one daemon:")
    for r in rows:
        print(f"  {r['backend']:<11} x{r['daemons']}: {r['jobs_per_s'] / base:5.2f}")


if __name__ == "__main__":
    main()
