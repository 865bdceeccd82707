"""Catalog errors: plain exceptions, importable without SQLAlchemy (read commands use them)."""


class CatalogError(Exception):
    """A user-facing problem with a catalog request (unknown model, duplicate name...)."""


class NotFound(CatalogError):
    """A model, job or sweep that is not in the catalog."""


class QueryError(ValueError):
    """A bad filter or reference in a read; the message is one line a user can act on."""
