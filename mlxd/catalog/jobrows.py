"""New job rows in plain SQL: what a submit writes, without SQLAlchemy.

A submit is typed many times a day; the Store (SQLModel, Alembic) costs half a second to
import. The rows here are the ones the Store would write (the same columns and defaults as
``models.Job``), through the stdlib ``sqlite3`` or psycopg, in one transaction for a whole
graph: every row, or none. Called on a catalog at head (the room read it through ``Reader``
first, which migrates one that is not).
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from mlxd.catalog.errors import NotFound
from mlxd.config import Paths
from mlxd.vocab import settings


@dataclass
class NewJob:
    """One row to write. ``after_row``: the index (in the same call) of the row it waits
    on; ``after_job_id``: a job already in the catalog."""

    kind: str
    params: dict[str, Any]
    pool: str
    priority: int = 0
    after_job_id: int | None = None
    after_row: int | None = None
    timeout_s: float | None = None
    max_attempts: int = 3
    submitted_by: str | None = None


_INSERT = (
    "insert into job (kind, params, status, priority, attempts, max_attempts, progress, "
    "after_job_id, timeout_s, cancel_requested, submitted_by, submitted_at, result, "
    "interruptions, crashes, pool) "
    "values (?, {json}, 'queued', ?, 0, ?, 0.0, ?, ?, ?, ?, ?, {json}, 0, 0, ?) returning id"
)


def _connect(paths: Paths):
    """A connection that writes, and the SQL for a JSON parameter on it."""
    from mlxd.catalog.backend import database, sqlite_connect

    db = database(paths)
    if db.is_postgres:
        from mlxd.catalog.dialect import PostgresConnection

        con = db.connect()  # autocommit: the transaction below is explicit
        con.execute("set timezone = 'UTC'")
        return PostgresConnection(con), "cast(? as json)", "begin"
    con = sqlite_connect(paths.catalog_db, timeout=settings.BUSY_TIMEOUT_S.get())
    con.isolation_level = None  # BEGIN is ours: IMMEDIATE, as the Store's writes
    con.execute("pragma foreign_keys=on")
    con.execute("pragma synchronous=normal")  # as the Store's connections (WAL)
    return con, "?", "begin immediate"


def insert_jobs(paths: Paths, jobs: Sequence[NewJob]) -> list[int]:
    """Write ``jobs`` as queued rows in one transaction; their ids, in order. A job that
    waits on a catalog job that does not exist writes nothing (NotFound)."""
    con, json_param, begin = _connect(paths)
    insert = _INSERT.format(json=json_param)
    # SQLAlchemy's format for a DATETIME on SQLite; a naive UTC timestamp on PostgreSQL.
    now = datetime.now(UTC).replace(tzinfo=None)
    submitted_at = now if json_param != "?" else now.isoformat(" ", "microseconds")
    ids: list[int] = []
    try:
        con.execute(begin)
        for job in jobs:
            after = ids[job.after_row] if job.after_row is not None else job.after_job_id
            if job.after_row is None and after is not None:
                if con.execute("select id from job where id = ?", (after,)).fetchone() is None:
                    raise NotFound(f"job {after} not found; see 'mlxd jobs list'")
            row = con.execute(
                insert,
                (
                    job.kind,
                    json.dumps(job.params),
                    job.priority,
                    job.max_attempts,
                    after,
                    job.timeout_s,
                    False,
                    job.submitted_by,
                    submitted_at,
                    "{}",
                    job.pool,
                ),
            ).fetchone()
            ids.append(row[0])
            con.execute(
                "update job set log_path = ? where id = ?", (str(paths.job_log(row[0])), row[0])
            )
        con.execute("commit")
    except BaseException:
        with contextlib.suppress(Exception):  # (no transaction when BEGIN itself failed)
            con.execute("rollback")
        raise
    finally:
        con.close()
    return ids
