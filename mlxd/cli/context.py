"""What every command needs: the state folder, the catalog handle, and one-line errors."""

from __future__ import annotations

import threading
from collections.abc import Callable

import click

from mlxd.config import Paths, paths

FAILED_JOB_EXIT = 1


# One exit status per kind of error, whichever command says it (as Click does):
#   2, BadUsage: the command line is wrong, and changing it is the fix: an unknown command,
#      option, name or id; a bad value; options that do not go together; things named
#      together that do not fit each other (an adapter and another base, a prompt cache and
#      another model, two tokenizers, a length past the model's context); a new name that is
#      taken; a folder or file given as an argument that is not what it should be.
#   1, UserError: the command line is right but the state of things refuses it now: a job
#      in the wrong state, a registered model, adapter or cache whose files are gone or
#      broken, too little memory or disk, no daemon, dependents, another user's job, and a
#      job that failed.
# Lower rooms raise plain exceptions; `catalog_errors` maps them: NotFound, QueryError,
# SpecError and ModelFolderError are usage errors, any other CatalogError a refusal; the
# scheduling room's refusals as `refused` says.


class UserError(click.ClickException):
    """A refusal: the state of things, not the command line, is what to change; exit 1."""

    exit_code = 1


WAIT_TIMEOUT_EXIT = 124  # as timeout(1): the wait ran out, the job itself did not fail
DAEMON_NOT_RUNNING_EXIT = 3  # as `systemctl is-active` / LSB status: not running


class WaitTimedOut(UserError):
    """A wait that ran out before the job ended (the job goes on)."""

    exit_code = WAIT_TIMEOUT_EXIT


INTERRUPTED_EXIT = 130  # as a shell after Ctrl-C


class WaitInterrupted(UserError):
    """Ctrl-C while following a job: the wait ends, the job goes on in its daemon."""

    exit_code = INTERRUPTED_EXIT


class BadUsage(click.UsageError):
    """Bad arguments: the command line is what to change; exit status 2."""

    exit_code = 2


_paths: Paths | None = None


def get_paths() -> Paths:
    """This process's MLXD_HOME, checked to be usable once (a one-line error otherwise)."""
    global _paths
    p = paths()
    if _paths != p:
        from mlxd.config import HomeError, check_home
        from mlxd.system.permissions import apply_umask

        apply_umask(p.home)  # a group-shared home: files the whole group can use
        try:
            _paths = check_home(p)
        except HomeError as e:
            raise UserError(str(e)) from None
    return p


_store = None
_store_lock = threading.Lock()


def get_store():
    """The catalog (opened and migrated once per process)."""
    global _store
    with _store_lock:  # a server's request threads share one
        if _store is None:
            from mlxd.catalog.store import Store
            from mlxd.system.permissions import share_files

            p = get_paths()
            _store = Store(p)
            share_files(p.home)  # SQLite ignores the umask's group bits
    return _store


# One Reader per thread (an SQLite connection serves the thread that opened it): a command
# has one thread, the team server runs each request's command in its own.
_local = threading.local()


def get_reader():
    """The catalog's fast read path (stdlib sqlite3; no SQLAlchemy), opened once per thread."""
    reader = getattr(_local, "reader", None)
    if reader is None:
        from mlxd.catalog.read import Reader

        reader = _local.reader = Reader(get_paths())
    return reader


def close_reader() -> None:
    """Close this thread's Reader (a server thread's command is done)."""
    reader = getattr(_local, "reader", None)
    if reader is not None:
        reader.close()
        _local.reader = None


def reset() -> None:
    """Forget the catalog handles (tests switch MLXD_HOME between calls)."""
    global _store
    if _store is not None:
        _store.close()
    _store = None
    close_reader()


def refused(e: Exception) -> click.ClickException:
    """A refusal of the scheduling room (``mlxd.scheduling.errors``) as the CLI says it: a
    bad argument or prerequisite is the command line's (exit 2); a full queue, a job that
    does not fit or has no place is the state of things (exit 1)."""
    from mlxd.scheduling.errors import BadArgument, BadPrerequisite

    message = str(e.args[0]) if e.args else type(e).__name__
    if isinstance(e, BadArgument | BadPrerequisite):
        return BadUsage(message)
    return UserError(message)


def catalog_errors(fn: Callable) -> Callable:
    """Turn catalog and spec errors into one-line CLI errors with the right exit status."""
    import functools

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        from mlxd.catalog.errors import CatalogError, NotFound, QueryError
        from mlxd.formats.modelfolder import ModelFolderError
        from mlxd.scheduling.errors import SchedulingError
        from mlxd.vocab.errors import SpecError

        try:
            return fn(*args, **kwargs)
        except SchedulingError as e:
            raise refused(e) from None
        except (NotFound, QueryError, SpecError, ModelFolderError) as e:
            raise BadUsage(str(e.args[0])) from None
        except CatalogError as e:
            raise UserError(str(e.args[0])) from None

    return wrapper
