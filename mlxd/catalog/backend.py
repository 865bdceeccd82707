"""Which database holds the catalog and the queue: SQLite files in MLXD_HOME, or PostgreSQL.

``MLXD_DATABASE_URL=postgresql://user@host:5432/db`` (or ``database_url = "..."`` in
``MLXD_HOME/config.toml``) puts both the catalog and the huey queue in one PostgreSQL
database, so several daemons on several machines share them. Unset, nothing changes: the
catalog is ``catalog.db`` and the queue ``queue.db`` in MLXD_HOME.

Stdlib only (read commands import this): psycopg is imported when a PostgreSQL URL is used.
A URL is never printed with its password: :meth:`Database.display` hides it.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

from mlxd.catalog.errors import CatalogError
from mlxd.config import ConfigError, Paths, read_config
from mlxd.vocab import settings

POSTGRES_SCHEMES = ("postgresql", "postgres", "postgresql+psycopg")
# A daemon on another machine or a teammate's laptop should not hang on a dead server.
CONNECT_TIMEOUT_S = 5


@dataclass(frozen=True)
class Database:
    """Where the catalog lives: ``url`` None means SQLite in MLXD_HOME."""

    url: str | None = None
    sqlite_path: str | None = None

    @property
    def is_postgres(self) -> bool:
        return self.url is not None

    @property
    def kind(self) -> str:
        return "postgresql" if self.is_postgres else "sqlite"

    @property
    def host(self) -> str:
        return (urlsplit(self.url).hostname or "localhost") if self.url else ""

    @property
    def port(self) -> int:
        if not self.url:
            return 0
        try:
            return urlsplit(self.url).port or 5432
        except ValueError:
            return 5432

    @property
    def name(self) -> str:
        return unquote(urlsplit(self.url).path.lstrip("/")) if self.url else ""

    def display(self) -> str:
        """The URL as people may see it: the password replaced by ``***``."""
        if not self.url:
            return f"sqlite:///{self.sqlite_path}"
        parts = urlsplit(self.url)
        if parts.password is None:
            return self.url
        user = parts.username or ""
        netloc = f"{user}:***@{parts.hostname or ''}" + (f":{parts.port}" if parts.port else "")
        return parts._replace(netloc=netloc).geturl()

    @property
    def libpq_url(self) -> str:
        """The URL for psycopg (libpq knows postgresql:// and postgres://)."""
        assert self.url
        return "postgresql" + self.url[self.url.index(":") :]

    @property
    def sqlalchemy_url(self) -> str:
        if not self.url:
            return f"sqlite:///{self.sqlite_path}"
        return "postgresql+psycopg" + self.url[self.url.index(":") :]

    def unreachable(self, exc: BaseException) -> CatalogError:
        """The one-line error for a server that did not answer (no password in it)."""
        why = _short_reason(exc)
        return CatalogError(
            f"cannot reach the PostgreSQL database at {self.host}:{self.port} ({why}); "
            f"check that the server runs, or unset {settings.DATABASE_URL.name}"
        )

    def connect(self):
        """A psycopg connection (autocommit), or the one-line error naming host and port."""
        import psycopg

        try:
            return psycopg.connect(
                self.libpq_url, autocommit=True, connect_timeout=CONNECT_TIMEOUT_S
            )
        except psycopg.OperationalError as e:
            raise self.unreachable(e) from None


def _short_reason(exc: BaseException) -> str:
    text = str(getattr(exc, "orig", None) or exc).strip()
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    # libpq: 'connection to server at "127.0.0.1", port 1 failed: Connection refused', then
    # a hint line ('Is the server running on that host ...?')
    failed = [ln for ln in lines if "failed:" in ln]
    line = failed[-1] if failed else (lines[-1] if lines else type(exc).__name__)
    if "failed:" in line:
        line = line.rsplit("failed:", 1)[1].strip()
    line = line.removeprefix("FATAL:").strip()
    return line or type(exc).__name__


def configured_url(paths: Paths) -> str | None:
    """MLXD_DATABASE_URL, else ``database_url`` in MLXD_HOME/config.toml, else None."""
    url = settings.DATABASE_URL.get()
    if not url:
        try:
            url = str(read_config(paths).get("database_url", "")).strip()
        except ConfigError as e:
            raise CatalogError(str(e)) from None
    return url or None


def database(paths: Paths) -> Database:
    """The database for this home (raises CatalogError for a URL mlxd cannot use)."""
    url = configured_url(paths)
    if url is None:
        return Database(sqlite_path=str(paths.catalog_db))
    scheme = url.split(":", 1)[0].lower() if ":" in url else ""
    if scheme not in POSTGRES_SCHEMES:
        shown = scheme or url.split("@")[-1]
        raise CatalogError(
            f"{settings.DATABASE_URL.name} must be a postgresql:// URL (got '{shown}'); unset it to use "
            "SQLite in MLXD_HOME"
        )
    return Database(url=url)


def sqlite_connect(path, timeout: float = 30):
    """The one way mlxd opens an SQLite catalog file with the stdlib driver.

    Nothing else may open ``catalog.db`` (or its ``-wal``/``-shm``) in a process that holds
    SQLite connections: closing *any* descriptor of a file drops every POSIX lock this process
    holds on it, so a plain ``open()`` + ``close()`` in the daemon lets the next command take
    the exclusive lock and delete the WAL under the daemon's connections. SQLite's own
    connections share their locks per file; this keeps every reader on them."""
    import sqlite3

    return sqlite3.connect(path, timeout=timeout)


def quick_check(path, timeout: float = 30) -> str:
    """SQLite's own integrity check of a catalog or queue file: "ok", or what is wrong
    (raises sqlite3.DatabaseError for a file SQLite cannot read at all)."""
    con = sqlite_connect(path, timeout=timeout)
    try:
        return con.execute("pragma quick_check").fetchone()[0]
    finally:
        con.close()


def catalog_exists(paths: Paths) -> bool:
    """Whether a catalog is there to read (a PostgreSQL catalog: always assumed)."""
    db = database(paths)
    return db.is_postgres or paths.catalog_db.exists()
