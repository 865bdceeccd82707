"""Bringing a catalog file to the current schema.

Opening the catalog must stay cheap for read commands: a single query compares the
stored revision with HEAD_REVISION, and alembic is imported only when they differ.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

# The newest migration in mlxd/migrations/versions; a test keeps the two in step.
HEAD_REVISION = "0005"

MIGRATIONS_DIR = Path(__file__).resolve().parent.parent / "migrations"


def current_revision(db_path: Path) -> str | None:
    if not db_path.exists():
        return None
    con = sqlite3.connect(db_path, timeout=30)
    try:
        row = con.execute("select version_num from alembic_version").fetchone()
    except sqlite3.OperationalError:
        return None
    finally:
        con.close()
    return row[0] if row else None


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
