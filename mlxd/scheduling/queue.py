"""The huey queue (SQLite in MLXD_HOME, or PostgresHuey in the catalog's PostgreSQL
database): the enqueue every submit ends with. Only job ids travel through it.

A pool is a huey queue name: a daemon consumes the pools it joined (``--pool``), a submit
puts the job in its pool (the job row says which). The default pool keeps the queue name
mlxd always had, so an existing queue file keeps working.

The catalog is the truth about jobs; this queue only wakes a daemon up. A daemon registers
the function that runs a job (:func:`set_handler`), consumes with its own patient
PostgreSQL storage (``mlxd/daemon/queue.py``), and re-enqueues any queued catalog row the
queue does not hold, so a lost or failed enqueue delays a job by seconds, never loses it.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from functools import cache
from typing import TYPE_CHECKING

from mlxd.catalog import backend
from mlxd.config import Paths
from mlxd.scheduling.placement import DEFAULT_POOL
from mlxd.vocab import settings

if TYPE_CHECKING:
    from huey import Huey

TASK_NAME = "run_job"

_handler: Callable[[int], None] | None = None


def set_handler(handler: Callable[[int], None] | None) -> None:
    """The daemon's job runner; huey's worker threads call it with each job id."""
    global _handler
    _handler = handler


def queue_name(pool: str) -> str:
    return "mlxd" if pool == DEFAULT_POOL else f"mlxd.{pool}"


@cache
def get_huey(
    queue_db: str,
    pool: str = DEFAULT_POOL,
    database_url: str | None = None,
    postgres_class: type[Huey] | None = None,
) -> Huey:
    """The huey of one pool: SQLite at ``queue_db``, or PostgresHuey at ``database_url``
    (``postgres_class``: the daemon's consumers pass their patient one)."""
    huey_api = _import_huey(postgres=bool(database_url))
    if database_url:
        db = backend.Database(url=database_url)
        # Workers wait on LISTEN/NOTIFY and take tasks with FOR UPDATE SKIP LOCKED: any
        # number of daemons share the queue. read_timeout bounds a worker's wait, so a
        # stopping daemon notices within that time.
        huey = (postgres_class or huey_api.PostgresHuey)(
            queue_name(pool),
            dsn=db.libpq_url,
            results=False,
            utc=True,
            read_timeout=0.5,
            connect_timeout=backend.CONNECT_TIMEOUT_S,
        )
    else:
        # The catalog's busy timeout serves the queue too.
        huey = huey_api.SqliteHuey(
            queue_name(pool),
            filename=queue_db,
            results=False,
            utc=True,
            timeout=settings.BUSY_TIMEOUT_S.get(),
        )

    @huey.task(name=TASK_NAME)
    def run_job(job_id: int) -> None:
        if _handler is None:
            raise RuntimeError("run_job executed outside the mlxd daemon")
        _handler(job_id)

    huey.run_job = run_job
    return huey


def _import_huey(*, postgres: bool):
    """The huey package. ``huey.storage`` imports psycopg whenever it is installed (0.15 s,
    half of a whole submit) though only its PostgreSQL storage uses it: for an SQLite queue
    huey is imported with psycopg hidden, and a PostgreSQL queue later in the same process
    (tests switch backends) hands the storage module psycopg then."""
    if not postgres and "huey.storage" not in sys.modules and "psycopg" not in sys.modules:
        sys.modules["psycopg"] = None  # type: ignore[assignment]  # huey's import: ImportError
        try:
            import huey.storage  # noqa: F401
        finally:
            del sys.modules["psycopg"]
    import huey
    import huey.storage

    if postgres and huey.storage.psycopg is None:
        import psycopg

        huey.storage.psycopg = psycopg
    return huey


def huey_for(
    paths: Paths, pool: str = DEFAULT_POOL, postgres_class: type[Huey] | None = None
) -> Huey:
    """The queue of ``pool`` for this home's database (raises CatalogError for a database
    that cannot be reached)."""
    db = backend.database(paths)
    try:
        return get_huey(str(paths.queue_db), pool, db.url, postgres_class if db.url else None)
    except Exception as e:
        if db.is_postgres and type(e).__name__ == "OperationalError":
            raise db.unreachable(e) from None
        raise


def enqueue(paths: Paths, job_id: int, priority: int = 0, pool: str | None = None) -> None:
    """Wake a daemon of ``pool`` for job ``job_id`` (its row is already in the catalog)."""
    huey = huey_for(paths, pool or DEFAULT_POOL)
    huey.enqueue(huey.run_job.s(job_id, priority=priority))


def wake(paths: Paths, job) -> None:
    """Enqueue a job row as it reads (its pool and priority): a daemon of its pool wakes."""
    enqueue(paths, job.id, priority=job.priority, pool=job.pool)
