"""The huey queue (SQLite in MLXD_HOME, or PostgresHuey in the catalog's PostgreSQL
database). Only job ids travel through it.

A pool is a huey queue name: a daemon consumes the pools it joined (``--pool``), a submit
puts the job in its pool (the job row says which). The default pool keeps the queue name
mlxd always had, so an existing queue file keeps working.

The catalog is the truth about jobs; this queue only wakes a daemon up. A daemon registers
the function that runs a job (:func:`set_handler`) and re-enqueues any queued catalog row the
queue does not hold, so a lost or failed enqueue delays a job by seconds, never loses it.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from collections.abc import Callable
from functools import cache

from huey import Huey, SqliteHuey

from mlxd.catalog import backend
from mlxd.config import Paths, busy_timeout_s

TASK_NAME = "run_job"
DEFAULT_POOL = "default"
log = logging.getLogger("mlxd.queue")

_handler: Callable[[int], None] | None = None


def set_handler(handler: Callable[[int], None] | None) -> None:
    """The daemon's job runner; huey's worker threads call it with each job id."""
    global _handler
    _handler = handler


def queue_name(pool: str) -> str:
    return "mlxd" if pool == DEFAULT_POOL else f"mlxd.{pool}"


@cache
def get_huey(queue_db: str, pool: str = DEFAULT_POOL, database_url: str | None = None) -> Huey:
    """The huey of one pool: SQLite at ``queue_db``, or PostgresHuey at ``database_url``."""
    if database_url:
        db = backend.Database(url=database_url)
        # Workers wait on LISTEN/NOTIFY and take tasks with FOR UPDATE SKIP LOCKED: any
        # number of daemons share the queue. read_timeout bounds a worker's wait, so a
        # stopping daemon notices within that time.
        huey = _postgres_huey_class()(
            queue_name(pool),
            dsn=db.libpq_url,
            results=False,
            utc=True,
            read_timeout=0.5,
            connect_timeout=backend.CONNECT_TIMEOUT_S,
        )
    else:
        # The catalog's busy timeout serves the queue too.
        huey = SqliteHuey(
            queue_name(pool), filename=queue_db, results=False, utc=True, timeout=busy_timeout_s()
        )

    @huey.task(name=TASK_NAME)
    def run_job(job_id: int) -> None:
        if _handler is None:
            raise RuntimeError("run_job executed outside the mlxd daemon")
        _handler(job_id)

    huey.run_job = run_job
    return huey


# While the database server is away (a restart), a consumer's reads of the queue wait this
# long, doubling from the first, between tries; each outage is logged in one line, not a
# traceback per try from huey's worker and scheduler.
OUTAGE_FIRST_DELAY_S = 0.2
OUTAGE_MAX_DELAY_S = 2.0  # also how late a stopping daemon may notice, at worst


@cache
def _postgres_huey_class() -> type[Huey]:
    from huey import PostgresHuey
    from huey.constants import EmptyData as _EMPTY
    from huey.storage import PostgresStorage

    from mlxd.daemon.retry import short_error, transient

    class PatientPostgresStorage(PostgresStorage):
        """huey's PostgreSQL storage whose consumer-side reads ride out a lost server.

        huey's connections reconnect by themselves once a broken one is seen (the task
        connection and each worker's LISTEN connection); what is added here is backoff and
        quiet: a read that fails with a connection error returns "nothing" after a pause
        instead of raising into huey's worker loop, which would log a traceback and retry
        every few tenths of a second. No task is lost: a dequeue is one autocommitted
        DELETE ... RETURNING, so a task is either still in the table or returned."""

        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self._outage_lock = threading.Lock()
            self._outage_delay = 0.0
            self._outage_since: float | None = None

        def _patient(self, fn, empty):
            try:
                try:
                    value = fn()
                except Exception as e:
                    if not transient(e) or self._outage_since is not None:
                        raise
                    # Often one stale connection (the server restarted while this worker
                    # ran a job): huey drops a broken one, so a second try reconnects.
                    value = fn()
            except Exception as e:
                if not transient(e):
                    raise
                with self._outage_lock:
                    first = self._outage_since is None
                    if first:
                        self._outage_since = time.monotonic()
                        self._outage_delay = OUTAGE_FIRST_DELAY_S
                    delay = self._outage_delay
                    self._outage_delay = min(delay * 2, OUTAGE_MAX_DELAY_S)
                if first:
                    log.warning(
                        "queue %s: the database is unreachable (%s); trying again",
                        self.name,
                        short_error(e),
                    )
                time.sleep(delay)
                return empty
            if self._outage_since is not None:
                with self._outage_lock:
                    since, self._outage_since = self._outage_since, None
                if since is not None:
                    log.info(
                        "queue %s: the database answers again after %.1f s",
                        self.name,
                        time.monotonic() - since,
                    )
            return value

        def dequeue(self):
            return self._patient(super().dequeue, None)

        def read_schedule(self, ts):
            return self._patient(lambda: super(PatientPostgresStorage, self).read_schedule(ts), [])

        def pop_data(self, key):
            # Before and after every task huey reads and clears the task's revoke flag: on a
            # connection cut during the task that raised into the worker loop, a traceback
            # in the daemon log. mlxd revokes nothing: a flag not read is a flag not there.
            return self._patient(lambda: super(PatientPostgresStorage, self).pop_data(key), _EMPTY)

        def peek_data(self, key):
            return self._patient(lambda: super(PatientPostgresStorage, self).peek_data(key), _EMPTY)

        def has_data_for_key(self, key):
            return self._patient(
                lambda: super(PatientPostgresStorage, self).has_data_for_key(key), False
            )

    class PatientPostgresHuey(PostgresHuey):
        storage_class = PatientPostgresStorage

    return PatientPostgresHuey


def huey_for(paths: Paths, pool: str = DEFAULT_POOL) -> Huey:
    """The queue of ``pool`` for this home's database (raises CatalogError for a database
    that cannot be reached)."""
    db = backend.database(paths)
    try:
        return get_huey(str(paths.queue_db), pool, db.url)
    except Exception as e:
        if db.is_postgres and type(e).__name__ == "OperationalError":
            raise db.unreachable(e) from None
        raise


def enqueue(paths: Paths, job_id: int, priority: int = 0, pool: str | None = None) -> None:
    huey = huey_for(paths, pool or DEFAULT_POOL)
    huey.enqueue(huey.run_job.s(job_id, priority=priority))


def wake(paths: Paths, job) -> None:
    """Enqueue a job row as it reads (its pool and priority): a daemon of its pool wakes."""
    enqueue(paths, job.id, priority=job.priority, pool=job.pool)


def pending_job_ids(paths: Paths, pool: str = DEFAULT_POOL) -> set[int]:
    huey = huey_for(paths, pool)
    ids = set()
    for task in list(huey.pending()) + list(huey.scheduled()):
        if task.args:
            ids.add(int(task.args[0]))
    return ids


def check_queue_file(paths: Paths) -> str | None:
    """Move a corrupt queue file aside (the catalog rebuilds it); returns where, or None."""
    if backend.database(paths).is_postgres:
        return None  # the server looks after its own tables
    db = paths.queue_db
    if not db.exists():
        return None
    try:
        if backend.quick_check(db) == "ok":
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
