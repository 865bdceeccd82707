"""Catalog errors: plain exceptions, importable without SQLAlchemy (read commands use them)."""


class CatalogError(Exception):
    """A user-facing problem with a catalog request (unknown model, duplicate name...)."""


class NotFound(CatalogError):
    """A model, job or sweep that is not in the catalog."""


class QueryError(ValueError):
    """A bad filter or reference in a read; the message is one line a user can act on."""


class FencedOut(CatalogError):
    """A write for a job attempt that is no longer this host's: another host took the job
    back (or it ended meanwhile). The writer discards its work instead of recording it."""

    def __init__(self, job_id: int, attempt: int, holder: str | None, status: str | None):
        self.job_id, self.attempt, self.holder, self.status = job_id, attempt, holder, status
        if status is None:
            why = "was removed from the catalog"
        elif holder is not None:
            why = f"was taken back by {holder}"
        elif status == "queued":
            why = "was taken back by another host"
        else:
            why = f"ended meanwhile ({status})"
        super().__init__(f"job {job_id} attempt {attempt} {why}; discarding")
