"""Catalog writes that survive a locked or full catalog.

A supervisor that holds a job's result must not lose it because someone else held the
catalog's write lock longer than the busy timeout (a ``sqlite3`` shell, a backup): it tries
again with backoff. A write that fails because the disk is full is tried again the same way;
it succeeds once space is back.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from collections.abc import Callable
from typing import TypeVar

from sqlalchemy.exc import DBAPIError, OperationalError

log = logging.getLogger("mlxd.retry")
T = TypeVar("T")

FIRST_DELAY_S = 0.2
MAX_DELAY_S = 15.0


class GaveUp(Exception):
    """The daemon is stopping while a catalog write still fails."""


def transient(exc: BaseException) -> bool:
    """Whether a catalog or queue error may go away by itself (a lock, a full disk, a
    database server restarting)."""
    if isinstance(exc, DBAPIError) and exc.connection_invalidated:
        return True  # SQLAlchemy saw the connection die; its pool reconnects
    if not (isinstance(exc, OperationalError | sqlite3.OperationalError) or _psycopg_op(exc)):
        return False
    text = str(exc).lower()
    return any(w in text for w in TRANSIENT_WORDS)


def _psycopg_op(exc: BaseException) -> bool:
    """A psycopg OperationalError raised outside SQLAlchemy (huey's PostgreSQL queue), told
    by its class so that psycopg, an optional package, is not imported here."""
    return any(
        c.__name__ == "OperationalError" and c.__module__.startswith("psycopg")
        for c in type(exc).__mro__
    )


# SQLite's lock and disk errors; PostgreSQL's lost or refused connections (a server restart,
# a network blip): the engine's pool reconnects on the next try.
TRANSIENT_WORDS = (
    "locked",
    "busy",
    "disk is full",
    "disk i/o",
    "unable to open",
    "server closed the connection",
    "connection refused",
    "terminating connection",
    "connection is closed",
    "could not connect",
    "connection timeout",
    "the database system is",
    "consuming input failed",
    "connection failed",
    "could not receive data",
    "could not send data",
    "no connection to the server",
    "ssl connection has been closed",
)


def disk_full(exc: BaseException) -> bool:
    return "full" in str(exc).lower()


def retry_write(
    fn: Callable[[], T],
    *,
    what: str,
    stop: threading.Event | None = None,
    give_up_s: float | None = None,
) -> T:
    """Call ``fn`` until it succeeds; transient catalog errors are retried with backoff.

    Raises GaveUp when ``stop`` is set (or ``give_up_s`` passed) while it still fails.
    """
    delay = FIRST_DELAY_S
    began = time.monotonic()
    tries = 0
    while True:
        try:
            return fn()
        except Exception as e:  # noqa: BLE001  sorted below
            if not transient(e):
                raise
            tries += 1
            if tries == 1 or tries % 10 == 0:
                log.warning("catalog write '%s' failed (%s); trying again", what, short_error(e))
            if stop is not None and stop.is_set():
                raise GaveUp(what) from e
            if give_up_s is not None and time.monotonic() - began > give_up_s:
                raise GaveUp(what) from e
            time.sleep(delay)
            delay = min(delay * 2, MAX_DELAY_S)


def try_write(fn: Callable[[], object], *, what: str) -> bool:
    """One attempt at a write that may be skipped (progress, heartbeats); False if it failed."""
    try:
        fn()
        return True
    except Exception as e:  # noqa: BLE001
        if not transient(e):
            raise
        log.warning("catalog write '%s' skipped (%s)", what, short_error(e))
        return False


def short_error(exc: BaseException) -> str:
    """The driver's message, without SQLAlchemy's SQL and link lines."""
    return str(getattr(exc, "orig", None) or exc).splitlines()[0]
