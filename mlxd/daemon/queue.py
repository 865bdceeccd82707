"""The huey queue (SQLite, in MLXD_HOME). Only job ids travel through it.

The catalog is the truth about jobs; this queue only wakes a daemon up. A daemon registers
the function that runs a job (:func:`set_handler`) and re-enqueues any queued catalog row the
queue does not hold, so a lost or failed enqueue delays a job by seconds, never loses it.
"""

from __future__ import annotations

import logging
import sqlite3
import time
from collections.abc import Callable
from functools import cache

from huey import SqliteHuey

from mlxd.config import Paths, busy_timeout_s

TASK_NAME = "run_job"
log = logging.getLogger("mlxd.queue")

_handler: Callable[[int], None] | None = None


def set_handler(handler: Callable[[int], None] | None) -> None:
    """The daemon's job runner; huey's worker threads call it with each job id."""
    global _handler
    _handler = handler


@cache
def get_huey(queue_db: str) -> SqliteHuey:
    # The catalog's busy timeout serves the queue too.
    huey = SqliteHuey("mlxd", filename=queue_db, results=False, utc=True, timeout=busy_timeout_s())

    @huey.task(name=TASK_NAME)
    def run_job(job_id: int) -> None:
        if _handler is None:
            raise RuntimeError("run_job executed outside the mlxd daemon")
        _handler(job_id)

    huey.run_job = run_job
    return huey


def enqueue(paths: Paths, job_id: int, priority: int = 0) -> None:
    huey = get_huey(str(paths.queue_db))
    huey.enqueue(huey.run_job.s(job_id, priority=priority))


def pending_job_ids(paths: Paths) -> set[int]:
    huey = get_huey(str(paths.queue_db))
    ids = set()
    for task in list(huey.pending()) + list(huey.scheduled()):
        if task.args:
            ids.add(int(task.args[0]))
    return ids


def check_queue_file(paths: Paths) -> str | None:
    """Move a corrupt queue file aside (the catalog rebuilds it); returns where, or None."""
    db = paths.queue_db
    if not db.exists():
        return None
    try:
        con = sqlite3.connect(db, timeout=30)
        try:
            row = con.execute("pragma quick_check").fetchone()
        finally:
            con.close()
        if row and row[0] == "ok":
            return None
    except sqlite3.DatabaseError as e:
        log.warning("the queue file %s is unreadable (%s)", db, e)
    aside = db.with_name(f"{db.name}.corrupt-{time.strftime('%Y%m%d-%H%M%S')}")
    for suffix in ("", "-wal", "-shm"):
        part = db.with_name(db.name + suffix)
        if part.exists():
            part.replace(aside.with_name(aside.name + suffix))
    get_huey.cache_clear()
    return str(aside)
