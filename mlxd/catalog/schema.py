"""Bringing a catalog file to the current schema.

Opening the catalog must stay cheap for read commands: a single query compares the
stored revision with HEAD_REVISION, and alembic is imported only when they differ.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

# The newest migration in mlxd/migrations/versions; a test keeps the two in step.
HEAD_REVISION = "0017"

MIGRATIONS_DIR = Path(__file__).resolve().parent.parent / "migrations"


def current_revision(db_path: Path) -> str | None:
    """The catalog's schema revision; None for a file that does not exist yet.

    A file that exists but is not an mlxd catalog (0 bytes, not SQLite, another program's
    database) raises CatalogError: recreating it would forget every model it named, and a new
    model could then overwrite a folder the old catalog knew."""
    from mlxd.catalog.backend import sqlite_connect
    from mlxd.catalog.errors import CatalogError

    try:
        size = db_path.stat().st_size
    except FileNotFoundError:
        return None
    # Never open() the file to read its header: closing that descriptor would drop the
    # SQLite locks this process holds on it (backend.sqlite_connect says why).
    if size == 0:
        raise CatalogError(
            f"the catalog {db_path} is empty (0 bytes); restore it from a backup "
            "or move it away to start a new catalog"
        )
    con = sqlite_connect(db_path)
    try:
        tables = {r[0] for r in con.execute("select name from sqlite_master where type='table'")}
        if "alembic_version" not in tables:
            if tables:
                raise CatalogError(
                    f"{db_path} is another program's database (tables: "
                    f"{', '.join(sorted(tables)[:5])}), not an mlxd catalog"
                )
            return None
        row = con.execute("select version_num from alembic_version").fetchone()
    except sqlite3.DatabaseError as e:
        if "not a database" in str(e):
            raise CatalogError(
                f"{db_path} is not an SQLite file, so not an mlxd catalog; move it "
                "away or point MLXD_HOME elsewhere"
            ) from None
        raise CatalogError(f"{db_path} cannot be read as a catalog ({e})") from None
    finally:
        con.close()
    return row[0] if row else None


def postgres_revision(db) -> str | None:
    """The schema revision of a PostgreSQL catalog (``db``: a backend.Database); None when
    the database has no catalog yet."""
    from mlxd.catalog.errors import CatalogError

    con = db.connect()
    try:
        found = con.execute("select to_regclass('alembic_version')").fetchone()[0]
        if found is None:
            tables = [
                r[0]
                for r in con.execute(
                    "select tablename from pg_tables where schemaname = current_schema() "
                    "and tablename not like 'huey%' order by 1 limit 5"
                )
            ]
            if tables:
                raise CatalogError(
                    f"the database {db.name} on {db.host}:{db.port} holds "
                    f"another program's tables ({', '.join(tables)}), not an "
                    "mlxd catalog"
                )
            return None
        row = con.execute("select version_num from alembic_version").fetchone()
    finally:
        con.close()
    return row[0] if row else None


def check_not_newer(revision: str | None, where: str) -> None:
    """A catalog migrated by a newer mlxd is refused: this code cannot know its tables."""
    from mlxd.catalog.errors import CatalogError

    if revision is None or revision == HEAD_REVISION:
        return
    known = sorted(p.name[:4] for p in (MIGRATIONS_DIR / "versions").glob("[0-9]*.py"))
    if revision not in known:
        raise CatalogError(
            f"{where} has schema revision {revision}, newer than this mlxd "
            f"knows (up to {HEAD_REVISION}); upgrade mlxd"
        )


def alembic_config(url: str | None = None):
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    if url:
        cfg.set_main_option("sqlalchemy.url", url)
    return cfg


def upgrade(engine, revision: str = "head") -> None:
    """Apply pending migrations on ``engine``'s database."""
    from alembic import command

    if engine.dialect.name != "sqlite":
        # PostgreSQL alters tables in place: no pragmas, no table rebuilds. One migrating
        # process at a time (an advisory lock held for the transaction).
        with engine.begin() as conn:
            conn.exec_driver_sql("select pg_advisory_xact_lock(7311)")
            cfg = alembic_config()
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, revision)
        return
    with engine.connect() as conn:
        # Batch migrations rebuild tables (copy, drop, rename); with foreign keys enforced the
        # drop fails while other tables point at it. The pragma only works outside a
        # transaction, so it goes straight to the driver before SQLAlchemy begins one.
        raw = conn.connection.driver_connection
        raw.execute("pragma foreign_keys=off")
        try:
            with conn.begin():
                cfg = alembic_config()
                cfg.attributes["connection"] = conn
                command.upgrade(cfg, revision)
            problems = raw.execute("pragma foreign_key_check").fetchall()
            if problems:
                raise RuntimeError(f"catalog migration left broken references: {problems[:5]}")
        finally:
            raw.execute("pragma foreign_keys=on")
