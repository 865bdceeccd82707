"""The daemon's side of the huey queue (``mlxd/scheduling/queue.py`` enqueues): its
consumers' queues, patient while the PostgreSQL server is away, what the queue holds, and a
corrupt SQLite queue file moved aside."""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from functools import cache

from huey import Huey

from mlxd.catalog import backend
from mlxd.config import Paths
from mlxd.scheduling.placement import DEFAULT_POOL
from mlxd.scheduling.queue import get_huey, huey_for

log = logging.getLogger("mlxd.queue")


def consumer_huey(paths: Paths, pool: str = DEFAULT_POOL) -> Huey:
    """The queue of ``pool`` as this daemon's consumer reads it."""
    return huey_for(paths, pool, _postgres_huey_class())


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


def pending_job_ids(paths: Paths, pool: str = DEFAULT_POOL) -> set[int]:
    huey = consumer_huey(paths, pool)
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
