"""Faults around the catalog and the queue: a lock held past the busy timeout, a submit
whose second write never happened, a locked or corrupt queue file, a full disk."""

from __future__ import annotations

import sqlite3
import threading
import time

import pytest

pytestmark = pytest.mark.daemon


def _hold_lock(db, seconds: float, mode: str = "IMMEDIATE", until=None) -> threading.Thread:
    """Another process's write lock (a sqlite3 shell, a backup) held for ``seconds``
    (after ``until()`` is true, when given)."""
    ready = threading.Event()

    def hold():
        con = sqlite3.connect(db, timeout=30, isolation_level=None)
        con.execute(f"BEGIN {mode}")
        ready.set()
        deadline = time.monotonic() + 120
        while until is not None and not until() and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(seconds)
        con.execute("ROLLBACK")
        con.close()

    t = threading.Thread(target=hold, daemon=True)
    t.start()
    ready.wait(10)
    return t


def _gone(pid: int) -> bool:
    import psutil

    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def test_a_lock_longer_than_the_busy_timeout_costs_no_job(fh_tiny):
    fh_tiny.start()  # busy timeout 1 s (FAST)
    j = fh_tiny.queue("quantize", model="tiny", bits=4)
    child = fh_tiny.wait_running_child(j)
    # Held until the child has handed over its result, then 4 s more: the daemon holds a
    # result it cannot record for four busy timeouts.
    holder = _hold_lock(fh_tiny.home / "catalog.db", 4, until=lambda: _gone(child))
    holder.join()
    final = fh_tiny.wait_job(j)
    assert final["status"] == "succeeded", final
    assert final["crashes"] == 0 and final["attempts"] == 1
    assert fh_tiny.models().count("tiny-4bit-g64") == 1
    # The runner met the lock after the child had gone (the lease renewal it does before the
    # result, or the result itself, whichever came first) and waited it out.
    import re

    assert re.search(
        r"catalog write '(record the result of job 1|renew the lease)' failed "
        r"\(database is locked\); trying again",
        fh_tiny.daemon_log(),
    ), fh_tiny.daemon_log()
    fh_tiny.assert_consistent()


def test_cancel_works_while_the_catalog_is_locked(fh_tiny):
    fh_tiny.start()
    j = fh_tiny.queue("bench", model="tiny", prompt_tokens=[16], gen_tokens=[2000], trials=40)
    child = fh_tiny.wait_running_child(j)
    holder = _hold_lock(fh_tiny.home / "catalog.db", 5)
    proc = fh_tiny.mlxd("jobs", "cancel", str(j))
    assert proc.stdout.startswith(f"Stopping job {j}")
    holder.join()
    final = fh_tiny.wait_job(j)
    assert final["status"] == "cancelled" and final["error"] == "cancelled by user"
    import psutil

    assert not psutil.pid_exists(child) or psutil.Process(child).status() == "zombie"
    fh_tiny.assert_consistent()


def test_a_queued_row_the_queue_never_got_runs_within_seconds(fh_tiny):
    from mlxd.catalog.store import Store
    from mlxd.config import paths
    from mlxd.jobs.quantize import Spec

    fh_tiny.start()
    # The CLI killed between its two writes: the catalog row exists, huey never heard of it.
    store = Store(paths(fh_tiny.home))
    job = store.submit_job("quantize", Spec(model="tiny", bits=8).to_params())
    store.close()
    final = fh_tiny.wait_job(job.id, timeout=180)
    assert final["status"] == "succeeded", final
    assert "were not in the queue; enqueued them" in fh_tiny.daemon_log()


def test_a_submit_while_the_queue_file_is_locked_still_runs(fh_tiny):
    fh_tiny.start()
    submitted = threading.Event()
    holder = _hold_lock(fh_tiny.home / "queue.db", 1, mode="EXCLUSIVE", until=submitted.is_set)
    proc = fh_tiny.mlxd("quantize", "tiny", "--bits", "8")
    submitted.set()
    assert proc.returncode == 0
    assert "the queue could not be written" in proc.stderr
    j = int(proc.stdout.split()[2].rstrip(":"))
    holder.join()
    assert fh_tiny.wait_job(j, timeout=180)["status"] == "succeeded"
    fh_tiny.assert_consistent()


def test_a_corrupt_queue_file_is_set_aside_and_rebuilt(fh_tiny):
    j = fh_tiny.queue("quantize", model="tiny", bits=4)
    (fh_tiny.home / "queue.db").write_bytes(b"this is not a database" * 100)
    for extra in ("queue.db-wal", "queue.db-shm"):
        (fh_tiny.home / extra).unlink(missing_ok=True)
    fh_tiny.start()
    assert fh_tiny.wait_job(j, timeout=180)["status"] == "succeeded"
    assert list(fh_tiny.home.glob("queue.db.corrupt-*"))


def test_a_full_disk_fails_the_job_with_path_and_free_space(fh_tiny):
    # A reserve larger than any disk: the free-space check trips as soon as the job runs.
    fh_tiny.start(MLXD_DISK_RESERVE_BYTES=str(10**18))
    j = fh_tiny.queue("quantize", model="tiny", bits=4)
    final = fh_tiny.wait_job(j, timeout=180)
    assert final["status"] == "failed"
    models = fh_tiny.home / "models"
    assert final["error"].startswith(f"disk full: {models} has ")
    assert final["error"].endswith("free, below the 1000000.0 TB reserve")
    assert final["crashes"] == 0  # not retried: it would only fail again
    fh_tiny.assert_consistent()
