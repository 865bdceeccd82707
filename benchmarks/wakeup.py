"""Wake-up latency: how long a job submitted to a running, idle daemon waits before it runs.

Two figures per backend (SQLite, PostgreSQL), to decide what wakes a daemon (issue 19, item
7; the decision is in docs/architecture.md, "The queue"):

1. **today, huey**: a real daemon (`mlxd daemon start --foreground`) in a temporary
   MLXD_HOME with the tiny synth model; each round submits a tiny job through the CLI
   (`mlxd quantize tiny --bits 8 --wait`) after a second of quiet, and takes the catalog's
   own timestamps: `submitted_at` (the row written by the CLI) to `started_at` (the claim by
   the daemon). The CLI's enqueue after its row is inside that figure, as it is for a user.
   Then the same daemon, jobs written and enqueued from this process (a 1 MiB probe job):
   row -> claimed, and enqueue returned -> claimed (huey's own wake-up alone).
2. **polling the job table** (the alternative, without huey): in this process, a thread that
   reads the queued rows every `--poll` seconds and claims the first with the same fenced
   `UPDATE ... WHERE status = 'queued'` the runner uses (`Store.claim_job`), while the main
   thread writes rows at random moments; submit (row written) to claim. Also the cost of one
   idle poll, which every daemon pays `1 / --poll` times a second forever.

    .venv/bin/python benchmarks/wakeup.py [--runs 10] [--poll 0.2] [--pg postgresql://...]

PostgreSQL runs need a server (default postgres@127.0.0.1:5432; `--pg ''` skips them); each
gets a fresh database, dropped afterwards.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import shutil
import statistics
import subprocess
import tempfile
import threading
import time
from datetime import UTC
from pathlib import Path

from queue_backends import _fresh_pg
from run import PY, REPO, Daemon, epoch


def _mlxd(env: dict[str, str], *args: str) -> str:
    proc = subprocess.run(
        [PY, "-m", "mlxd", *args], env=env, cwd=REPO, capture_output=True, text=True, timeout=600
    )
    if proc.returncode != 0:
        raise SystemExit(f"mlxd {' '.join(args)} failed: {proc.stderr[-2000:]}")
    return proc.stdout


def huey_wakeup(env: dict[str, str], home: Path, runs: int) -> dict[str, list[float]]:
    """Submit -> claimed through a real daemon, `runs` times, each after a second of quiet:
    through the CLI, then in-process (row -> claimed, enqueued -> claimed)."""
    _mlxd(env, "models", "synth", "tiny")
    daemon = Daemon(home, spare=False)  # (with os.environ = env: this home, this database)
    try:
        out: dict[str, list[float]] = {"cli": [], "row": [], "enqueued": []}
        for n in range(runs):
            time.sleep(1.0)  # idle: the consumers are at their longest poll delay
            text = _mlxd(env, "quantize", "tiny", "--bits", "8", "--name", f"q{n}", "--wait")
            job_id = re.search(r"Queued job (\d+)", text).group(1)
            job = json.loads(_mlxd(env, "jobs", "show", job_id, "--json"))
            if job["status"] != "succeeded":
                raise SystemExit(f"job {job_id} {job['status']}: {job.get('error')}")
            out["cli"].append(epoch(job["started_at"]) - epoch(job["submitted_at"]))
        from mlxd.catalog.store import Store
        from mlxd.config import paths
        from mlxd.daemon import queue

        store = Store(paths(home))
        try:
            for _ in range(runs):
                time.sleep(1.0)
                row = store.submit_job("probe", {"size_mb": 1, "repeats": 1})
                queue.enqueue(paths(home), row.id)
                enqueued = time.time()
                while (job := store.get_job(row.id)).status in ("queued", "running"):
                    time.sleep(0.02)
                started = job.started_at.replace(tzinfo=UTC).timestamp()
                out["row"].append(started - row.submitted_at.replace(tzinfo=UTC).timestamp())
                out["enqueued"].append(started - enqueued)
        finally:
            store.close()
        return out
    finally:
        daemon.stop()


def table_poll(home: Path, runs: int, poll_s: float) -> tuple[list[float], float]:
    """Submit -> claimed by a thread polling the job table every `poll_s`; and one idle
    poll's cost (median of 50)."""
    from mlxd.catalog.store import Store
    from mlxd.config import paths

    store = Store(paths(home))
    claimed: dict[int, float] = {}
    stop = threading.Event()

    def poller():
        while not stop.wait(poll_s):
            for job in store.list_jobs(["queued"]):
                if store.claim_job(job.id, host="bench", daemon_pid=os.getpid()):
                    claimed[job.id] = time.perf_counter()
                    store.finish_job(job.id, "succeeded")

    try:
        idle = []
        for _ in range(50):
            t0 = time.perf_counter()
            store.list_jobs(["queued"])
            idle.append(time.perf_counter() - t0)
        thread = threading.Thread(target=poller, daemon=True)
        thread.start()
        out = []
        for _ in range(runs):
            time.sleep(random.uniform(0.3, 0.6))  # at a random point of the poll cycle
            t0 = time.perf_counter()
            job = store.submit_job("probe", {})
            while job.id not in claimed:
                time.sleep(0.001)
            out.append(claimed[job.id] - t0)
        stop.set()
        thread.join()
        return out, statistics.median(idle)
    finally:
        store.close()


def run_backend(backend: str, args) -> dict:
    home = Path(tempfile.mkdtemp(prefix="mlxd-wakeup-")) / "home"
    env = dict(os.environ, MLXD_HOME=str(home), HF_HUB_OFFLINE="1", MLXD_SPARE_CHILD="0")
    env.pop("MLXD_DATABASE_URL", None)
    drop = None
    if backend == "postgresql":
        url, drop = _fresh_pg(args.pg)
        env["MLXD_DATABASE_URL"] = url
    saved = dict(os.environ)
    os.environ.clear()
    os.environ.update(env)
    try:
        huey = huey_wakeup(env, home, args.runs)
        poll, idle = table_poll(home, args.runs, args.poll)
    finally:
        os.environ.clear()
        os.environ.update(saved)
        if drop:
            drop()
        shutil.rmtree(home.parent, ignore_errors=True)
    return {
        "backend": backend,
        "huey_median_s": statistics.median(huey["cli"]),
        "huey_min_s": min(huey["cli"]),
        "huey_max_s": max(huey["cli"]),
        "huey_row_median_s": statistics.median(huey["row"]),
        "huey_enqueued_median_s": statistics.median(huey["enqueued"]),
        "poll_s": args.poll,
        "poll_median_s": statistics.median(poll),
        "poll_max_s": max(poll),
        "idle_poll_ms": idle * 1000,
        "runs": args.runs,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--poll", type=float, default=0.2, help="the alternative's poll interval, s")
    ap.add_argument("--pg", default="postgresql://postgres@127.0.0.1:5432/postgres")
    args = ap.parse_args()
    rows = [run_backend(b, args) for b in ("sqlite", "postgresql") if b == "sqlite" or args.pg]
    print(f"medians of {args.runs}, seconds; the alternative polls every {args.poll} s")
    print(
        f"{'backend':<11} {'huey, CLI submit':>17} {'(min-max)':>13} {'huey, row':>10} "
        f"{'huey, enqueued':>15} {'table poll':>11} {'(max)':>7} {'idle poll ms':>13}"
    )
    for r in rows:
        spread = "({:.3f}-{:.3f})".format(r["huey_min_s"], r["huey_max_s"])
        poll_max = "({:.3f})".format(r["poll_max_s"])
        print(
            f"{r['backend']:<11} {r['huey_median_s']:>17.3f} {spread:>13} "
            f"{r['huey_row_median_s']:>10.3f} {r['huey_enqueued_median_s']:>15.3f} "
            f"{r['poll_median_s']:>11.3f} {poll_max:>7} {r['idle_poll_ms']:>13.2f}"
        )
    print(json.dumps(rows))


if __name__ == "__main__":
    main()
