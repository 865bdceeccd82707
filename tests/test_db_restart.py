"""The database restarted under a running daemon costs no job (issue 13).

The test runs its own PostgreSQL server (tests/pgcluster.py: the shared one on 5432 is never
stopped), starts a daemon on it, stops the server with ``pg_ctl stop -m fast`` while a job
runs and starts it again: every job ends succeeded exactly once, and the daemon lives on.
"""

from __future__ import annotations

import time

import pytest

from tests.conftest import run_mlxd, wait_for
from tests.pgcluster import Unavailable, start_cluster
from tests.test_scaleout import Host, _submit_synths


@pytest.fixture
def private_pg(monkeypatch):
    try:
        cluster = start_cluster()
    except Unavailable as e:
        pytest.skip(f"no private PostgreSQL server: {e}")
    monkeypatch.setenv("MLXD_DATABASE_URL", cluster.url)
    import mlxd.cli.context as context
    from mlxd.scheduling.queue import get_huey

    context.reset()
    yield cluster
    context.reset()
    get_huey.cache_clear()
    cluster.destroy()


def test_the_database_restarted_under_a_running_daemon_costs_no_job(
    private_pg, tmp_path, tiny_model_dir
):
    from mlxd.catalog.store import Store
    from mlxd.config import paths

    host = Host(tmp_path / "hosts", "mac-a")
    run_mlxd("models", "add", str(tiny_model_dir), "--name", "tiny", home=host.home, check=True)
    host.start(MLXD_LEASE_TIMEOUT_S="10")
    try:
        # A job that runs for a few seconds (trials with a cool-down between them), then
        # small ones queued behind it.
        bench = run_mlxd(
            "bench", "tiny", "-p", "8", "-g", "4", "-n", "3", "--warmup", "0",
            "--delay", "1.5", home=host.home, check=True,
        )  # fmt: skip
        store = Store(paths(host.home))
        ids = [int(bench.stdout.split()[2].rstrip(":"))]
        ids += _submit_synths(store, host.home, ["s1", "s2", "s3"])
        wait_for(
            lambda: (j := store.get_job(ids[0])).status == "running" and j.progress > 0,
            timeout=60,
            what="the bench to be running",
        )
        store.close()  # its pooled connections die with the server

        private_pg.stop("fast")
        time.sleep(2)
        assert host.proc.poll() is None, host.log()[-3000:]
        private_pg.start()

        store = Store(paths(host.home))

        def ended():
            jobs = [store.get_job(i) for i in ids]
            return all(j.status not in ("queued", "running") for j in jobs) and jobs

        jobs = wait_for(ended, timeout=90, interval=0.25, what="every job to end")
        assert [j.status for j in jobs] == ["succeeded"] * 4, [(j.id, j.error) for j in jobs]
        assert all(j.attempts == 1 and j.crashes == 0 for j in jobs), [
            (j.id, j.attempts, j.crashes, j.interruptions) for j in jobs
        ]
        # Exactly once: one bench run, one model per synth job, no job twice in the queue.
        assert sorted(m.name for m in store.list_models()) == ["s1", "s2", "s3", "tiny"]
        assert len(store.list_jobs()) == 4
        assert len(store.bench_runs()) == 1
        assert host.proc.poll() is None, "the daemon died with its database"
        assert "mlxd daemon started" in host.log()
    finally:
        host.stop()


def test_a_lost_connection_is_transient_and_costs_the_job_nothing(mlxd_home):
    """Without a server: the errors psycopg and SQLAlchemy raise for a restarting database
    are retried, and a job whose handling met one is left for the housekeeper, not failed."""
    psycopg = pytest.importorskip("psycopg")
    from sqlalchemy.exc import OperationalError

    from mlxd.daemon.retry import transient
    from mlxd.daemon.service import make_handler

    lost = [
        psycopg.errors.AdminShutdown("terminating connection due to administrator command"),
        psycopg.OperationalError("consuming input failed: server closed the connection"),
        psycopg.OperationalError('connection failed: connection to server at "127.0.0.1", '
                                 "port 5 failed: Connection refused"),
    ]  # fmt: skip
    for e in lost:
        assert transient(e), e
        assert transient(OperationalError("select 1", {}, e)), e
    assert not transient(psycopg.errors.UndefinedTable("relation job does not exist"))
    assert not transient(ValueError("connection refused"))

    class Runner:
        def __init__(self, store):
            self.store = store

        def handle(self, job_id):
            raise OperationalError("select", {}, lost[0])

    from mlxd.catalog.store import Store
    from mlxd.config import paths

    store = Store(paths())
    job = store.submit_job("synth", {"name": "x"})
    make_handler(Runner(store))(job.id)
    assert store.get_job(job.id).status == "queued"
