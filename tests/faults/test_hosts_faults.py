"""Exactly once across hosts (issue 18): fenced results, foreground jobs that stay theirs, a
cut database connection said in one line.

Two "hosts" are two daemons with their own MLXD_HOME and host id on one fresh PostgreSQL
database (``pg_url``; skipped without a server), with leases of a few seconds.
"""

from __future__ import annotations

import psycopg

from tests.conftest import run_mlxd, wait_for
from tests.test_scaleout import Host


def _cut_connections(url: str) -> int:
    """pg_terminate_backend every other connection to the test's database."""
    with psycopg.connect(url, autocommit=True) as con:
        rows = con.execute(
            "select pg_terminate_backend(pid) from pg_stat_activity "
            "where datname = current_database() and pid <> pg_backend_pid()"
        ).fetchall()
    return len(rows)


def test_a_connection_cut_during_a_task_is_one_line_in_the_daemon_log(
    pg_url, tmp_path, tiny_model_dir
):
    from mlxd.catalog.store import Store
    from mlxd.config import paths

    host = Host(tmp_path / "hosts", "mac-a")
    run_mlxd("models", "add", str(tiny_model_dir), "--name", "tiny", home=host.home, check=True)
    host.start()
    try:
        bench = run_mlxd(
            "bench", "tiny", "-p", "8", "-g", "4", "-n", "3", "--warmup", "0",
            "--delay", "1", home=host.home, check=True,
        )  # fmt: skip
        job_id = int(bench.stdout.split()[2].rstrip(":"))
        store = Store(paths(host.home))
        wait_for(
            lambda: (j := store.get_job(job_id)).status == "running" and j.progress > 0,
            timeout=60,
            what="the bench to be running",
        )
        store.close()
        # Cut every connection, again and again, until the job has ended: some cut lands
        # while the task runs and another just before huey's own after-task writes.
        cuts = 0

        def ended():
            nonlocal cuts
            cuts += _cut_connections(pg_url)
            with psycopg.connect(pg_url, autocommit=True) as con:
                [(status,)] = con.execute("select status from job where id = %s", (job_id,))
            return status not in ("queued", "running")

        wait_for(ended, timeout=90, interval=0.3, what="the bench to end")
        assert cuts > 0
        store = Store(paths(host.home))
        job = store.get_job(job_id)
        assert job.status == "succeeded", job.error
        assert len(store.list_jobs()) == 1 and len(store.bench_runs()) == 1
        store.close()
        log = host.log()
        assert host.proc.poll() is None, log[-3000:]
        stdio = (host.home.parent / "mac-a-stdio.log").read_text()
        assert log.count("Traceback") == 0 and stdio.count("Traceback") == 0, (
            log[-4000:] + stdio[-4000:]
        )
    finally:
        host.stop()
