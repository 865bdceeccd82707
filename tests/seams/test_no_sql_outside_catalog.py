"""Seam 1: every SQL text lives in mlxd/catalog (read.py's queries, dialect.py's differences),
so every reader runs on SQLite and PostgreSQL alike. Today's defect: reports/data.py called
SQLite's json_extract itself, so `report` and `recommend` crashed on PostgreSQL."""

from __future__ import annotations

import ast
import re

from tests.conftest import REPO

PACKAGE = REPO / "mlxd"
ALLOWED = (PACKAGE / "catalog", PACKAGE / "migrations")
SQL = re.compile(
    r"\bselect\b[\s\S]+\bfrom\b|\binsert\s+into\b|\bupdate\s+\w+\s+set\b|\bdelete\s+from\b"
    r"|\bjson_extract\b|\bjson_object\b|\bcreate\s+(table|index)\s+\w+\s*\(|\bpragma\b"
    r"|\bgroup\s+by\s+[\w.]+\s*(,|$)|\bwhere\s+[\w.]+\s*(=|>=|<=|\bis\b|\bin\b)\s*(\?|\()"
    r"|\b[\w.]+\s+(=|is)\s+\?|\border\s+by\s+[\w.]+\s+(desc|asc)\b",
    re.I,
)


def _strings(tree: ast.AST):
    docstrings = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            body = getattr(node, "body", [])
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
                docstrings.add(id(body[0].value))
    for node in ast.walk(tree):
        if isinstance(node, ast.JoinedStr):
            text = "".join(v.value if isinstance(v, ast.Constant) else "{}" for v in node.values)
            yield node.lineno, text
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            if id(node) not in docstrings:
                yield node.lineno, node.value


def test_no_sql_text_outside_the_catalog():
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if any(path.is_relative_to(a) for a in ALLOWED):
            continue
        for line, text in _strings(ast.parse(path.read_text())):
            if m := SQL.search(text):
                found.append(f"{path.relative_to(REPO)}:{line}: ...{m.group(0)[:60]}...")
    assert not found, "SQL outside mlxd/catalog:\n" + "\n".join(sorted(set(found)))
