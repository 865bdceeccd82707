"""Exactly once across hosts (issue 18): fenced results, foreground jobs that stay theirs, a
cut database connection said in one line.

Two "hosts" are two daemons with their own MLXD_HOME and host id on one fresh PostgreSQL
database (``pg_url``; skipped without a server), with leases of a few seconds.
"""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import time

import psutil
import psycopg
import pytest

from tests.conftest import wait_for
from tests.test_scaleout import Host

FINAL = ("succeeded", "failed", "cancelled")


# pg_terminate_backend every other connection to the test's database (the catalog's and the
# queue's); QUEUE_CUT: only those whose last statement was on huey's tables.
CUT = (
    "select pg_terminate_backend(pid) from pg_stat_activity "
    "where datname = current_database() and pid <> pg_backend_pid()"
)
QUEUE_CUT = CUT + " and query like '%huey_%'"


def _queue(home, kind: str, **params) -> int:
    """What a submit does (a catalog row, then the queue), without a CLI process."""
    from mlxd.catalog.store import Store
    from mlxd.config import paths
    from mlxd.jobs import load_kind
    from mlxd.scheduling.queue import enqueue

    store = Store(paths(home))
    try:
        job = store.submit_job(kind, load_kind(kind).Spec(**params).to_params())
    finally:
        store.close()
    enqueue(paths(home), job.id)
    return job.id


def _add_tiny(home, folder) -> None:
    """What ``mlxd models add FOLDER --name tiny`` does, without a CLI process."""
    from mlxd.catalog.models import Model
    from mlxd.catalog.store import Store
    from mlxd.config import paths
    from mlxd.formats.modelfolder import inspect_folder

    info = inspect_folder(folder, check=True)
    fields = ("format", "architecture", "num_parameters", "size_bytes", "dtype")
    store = Store(paths(home))
    try:
        model = Model(name="tiny", path=str(info.path), source="local", managed=False)
        for f in fields:
            setattr(model, f, getattr(info, f))
        store.add_model(model)
    finally:
        store.close()


def _all(store, pred):
    """The jobs, when ``pred`` holds for every one."""
    jobs = store.list_jobs()
    return all(pred(j) for j in jobs) and jobs


def _gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


@pytest.mark.parametrize("wake", ["after", "during"])
def test_a_frozen_host_that_wakes_up_discards_its_results(pg_url, tmp_path, tiny_model_dir, wake):
    """mac-a runs a bench and a quantize; its daemon is frozen (SIGSTOP) past the lease while
    their children finish; mac-b takes both back and runs attempt 2; mac-a wakes after (or
    during) mac-b's runs. Each job ends once, succeeded on mac-b: one benchmark run, one
    model, nothing of mac-a's attempt in its home, one line in its log per job."""
    from mlxd.catalog.store import Store
    from mlxd.config import paths

    root = tmp_path / "hosts"
    a, b = Host(root, "mac-a", workers=2), Host(root, "mac-b", workers=2)
    _add_tiny(a.home, tiny_model_dir)
    bench = _queue(a.home, "bench", model="tiny", prompt_tokens=[8], gen_tokens=[4], trials=2)
    quant = _queue(a.home, "quantize", model="tiny", bits=4, name="q4")
    ids = (bench, quant)
    store = Store(paths(a.home))
    try:
        a.start(MLXD_SPARE_CHILD="0")
        children = wait_for(
            lambda: _all(store, lambda j: j.status == "running" and j.pid),
            timeout=60,
            what="mac-a to run both jobs",
        )
        children = [j.pid for j in children]
        a.proc.send_signal(signal.SIGSTOP)  # the daemon only: its children run on
        wait_for(lambda: all(_gone(pid) for pid in children), timeout=90, what="the children")
        b.start(MLXD_SPARE_CHILD="0")
        if wake == "after":
            wait_for(
                lambda: _all(store, lambda j: j.status == "succeeded"),
                timeout=120,
                what="mac-b to run both jobs again",
            )
        else:
            wait_for(
                lambda: _all(store, lambda j: j.host == "mac-b"),
                timeout=120,
                interval=0.02,
                what="mac-b to claim both jobs",
            )
            assert any(j.status == "running" for j in store.list_jobs())
        a.proc.send_signal(signal.SIGCONT)
        wait_for(  # what mac-a did with its attempts, whatever it was
            lambda: all(
                re.search(rf"job {i} (attempt 1 was|succeeded|failed)", a.log()) for i in ids
            ),
            timeout=60,
            what="mac-a to be done with both attempts",
        )
        jobs = wait_for(lambda: _all(store, lambda j: j.status in FINAL), what="both to end")
        assert [(j.id, j.status, j.host, j.attempts) for j in jobs] == [
            (bench, "succeeded", "mac-b", 2),
            (quant, "succeeded", "mac-b", 2),
        ], [(j.id, j.error) for j in jobs]
        assert len(store.bench_runs()) == 1
        assert [(m.name, m.host) for m in store.list_models()][1:] == [("q4", "mac-b")]
        for job_id in ids:
            assert f"job {job_id} attempt 1 was taken back by mac-b; discarding" in a.log()
        assert a.proc.poll() is None and "Traceback" not in a.log() + b.log()
        assert not (a.home / "models" / "q4").exists()
        assert list((a.home / "models" / ".partial").iterdir()) == []
    finally:
        store.close()
        a.proc.send_signal(signal.SIGCONT)
        a.stop()
        b.stop()


def test_a_foreground_job_on_a_machine_whose_daemon_stopped_stays_its_own(pg_url, tmp_path):
    """``models synth`` runs in its CLI on mac-a, whose daemon was stopped cleanly (its
    machine row says so); mac-b's daemon runs on. The job's own lease is fresh: mac-b leaves
    it alone, and it ends succeeded once, its model registered under mac-a."""
    from mlxd.catalog.store import Store
    from mlxd.config import paths

    root = tmp_path / "hosts"
    a, b = Host(root, "mac-a"), Host(root, "mac-b")
    try:
        a.start(MLXD_SPARE_CHILD="0")
        b.start(MLXD_SPARE_CHILD="0")
        a.stop()
        store = Store(paths(a.home))
        wait_for(
            lambda: any(m.host_id == "mac-a" and m.stopped_at for m in store.machines()),
            what="mac-a's machine row to say it stopped",
        )
        env = a.env(MLXD_HOST_ID="mac-a", MLXD_SPARE_CHILD="0")
        synth = subprocess.run(
            [sys.executable, "-m", "mlxd", "models", "synth", "s1"],
            capture_output=True,
            text=True,
            env=env,
            timeout=180,
        )
        assert synth.returncode == 0, synth.stderr
        assert synth.stderr.count("\n") <= 1 and "Traceback" not in synth.stderr, synth.stderr
        [job] = store.list_jobs()
        assert (job.status, job.host, job.attempts, job.interruptions) == (
            "succeeded",
            "mac-a",
            1,
            0,
        ), job.error
        assert [(m.name, m.host) for m in store.list_models()] == [("s1", "mac-a")]
        assert "Traceback" not in b.log() and f"job {job.id}" not in b.log()
        store.close()
    finally:
        a.stop()
        b.stop()


def test_a_connection_cut_during_a_task_is_one_line_in_the_daemon_log(
    pg_url, tmp_path, tiny_model_dir
):
    from mlxd.catalog.store import Store
    from mlxd.config import paths

    host = Host(tmp_path / "hosts", "mac-a")
    _add_tiny(host.home, tiny_model_dir)
    job_id = _queue(
        host.home, "bench", model="tiny", prompt_tokens=[8], gen_tokens=[4], trials=3,
        warmup=0, delay_s=1.0,
    )  # fmt: skip
    host.start(MLXD_SPARE_CHILD="0")
    try:
        store = Store(paths(host.home))
        wait_for(
            lambda: (j := store.get_job(job_id)).status == "running" and j.progress > 0,
            timeout=60,
            what="the bench to be running",
        )
        store.close()
        # Cut every connection of the daemon once, then the queue's again and again until
        # the job has ended: the one huey's worker uses after the task is a cut one.
        with psycopg.connect(pg_url, autocommit=True) as con:
            cuts = len(con.execute(CUT).fetchall())

            def ended():
                con.execute(QUEUE_CUT)
                [(status,)] = con.execute("select status from job where id = %s", (job_id,))
                return status not in ("queued", "running")

            wait_for(ended, timeout=90, interval=0.05, what="the bench to end")
        wait_for(lambda: "executed in" in host.log(), what="huey to be done with the task")
        time.sleep(1)  # what huey does after a task (and would log) takes a few milliseconds
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
