"""Seam 2: nothing in a process that holds SQLite connections opens a catalog file except
through the one connection factory (``mlxd.catalog.backend.sqlite_connect``).

Closing any descriptor of a file drops every POSIX lock the process holds on it: a plain
``open(catalog.db)`` + ``close()`` inside the daemon (a push job's ``prepare`` read the file's
header so) let the next command take the exclusive lock and delete ``catalog.db-wal`` under the
daemon's connections; later jobs stayed queued forever.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

from tests.conftest import REPO

PACKAGE = REPO / "mlxd"
FACTORY = PACKAGE / "catalog" / "backend.py"
# Names that hold a catalog file's path in mlxd's code.
CATALOG_PATH_WORDS = ("catalog_db", "catalog.db", "db_path")
OPENERS = ("open", "fdopen", "read_bytes", "read_text", "write_bytes", "write_text")


def _calls(tree: ast.AST):
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            yield node


def _name(func: ast.expr) -> str:
    if isinstance(func, ast.Name):
        return func.id
    if isinstance(func, ast.Attribute):
        return func.attr
    return ""


def test_no_code_opens_a_catalog_file_but_the_factory():
    offenders = []
    for path in sorted(PACKAGE.rglob("*.py")):
        source = path.read_text()
        tree = ast.parse(source)
        for call in _calls(tree):
            name = _name(call.func)
            if name not in OPENERS and name != "connect":
                continue
            where = f"{path.relative_to(REPO)}:{call.lineno}: {ast.unparse(call)[:80]}"
            if name in OPENERS:
                args = " ".join(ast.get_source_segment(source, a) or "" for a in call.args)
                receiver = (
                    ast.get_source_segment(source, call.func.value) or ""
                    if isinstance(call.func, ast.Attribute)
                    else ""
                )
                if any(w in args + " " + receiver for w in CATALOG_PATH_WORDS):
                    offenders.append(where)
                # `db = paths.catalog_db` then open(db): a bare `db` is a catalog path too
                if any(isinstance(a, ast.Name) and a.id == "db" for a in call.args):
                    offenders.append(where)
            if name == "connect" and isinstance(call.func, ast.Attribute):
                owner = ast.get_source_segment(source, call.func.value) or ""
                if owner == "sqlite3" and path != FACTORY:
                    args = " ".join(ast.get_source_segment(source, a) or "" for a in call.args)
                    if "queue" not in args and not _queue_db_function(tree, call):
                        offenders.append(where)
    assert not offenders, "catalog files opened outside the connection factory:\n" + "\n".join(
        offenders
    )


def _queue_db_function(tree: ast.AST, call: ast.Call) -> bool:
    """Whether ``call`` sits in a function that works on ``paths.queue_db`` (huey's file)."""
    for fn in ast.walk(tree):
        if isinstance(fn, ast.FunctionDef) and fn.lineno <= call.lineno <= (fn.end_lineno or 0):
            body = ast.unparse(fn)
            if "queue_db" in body and "catalog_db" not in body:
                return True
    return False


def test_reading_the_schema_revision_keeps_the_wal_of_other_connections(tmp_path):
    """The daemon's own connections stay open while a job's prepare asks the schema
    revision (every Reader does); another process then opens and closes the catalog. Its
    close must not find itself the last user and delete the WAL."""
    import sqlite3

    from mlxd.catalog.read import Reader
    from mlxd.catalog.store import Store
    from mlxd.config import Paths

    paths = Paths(tmp_path / "home")
    store = Store(paths)  # creates the catalog in WAL mode
    held = sqlite3.connect(paths.catalog_db)
    held.execute("select count(*) from model").fetchone()  # the daemon's open connection
    wal = Path(str(paths.catalog_db) + "-wal")
    assert wal.exists()
    inode = wal.stat().st_ino
    with Reader(paths) as reader:  # what push's prepare does inside the daemon
        reader.models()
    other = (
        "import sqlite3, sys; c = sqlite3.connect(sys.argv[1]); "
        "c.execute('select count(*) from model').fetchone(); c.close()"
    )
    subprocess.run([sys.executable, "-c", other, str(paths.catalog_db)], check=True)
    assert wal.exists(), "another process deleted catalog.db-wal under open connections"
    assert wal.stat().st_ino == inode
    held.close()
    store.close()
