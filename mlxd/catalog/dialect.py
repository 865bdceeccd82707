"""The few places where the read path's SQL differs between SQLite and PostgreSQL.

The queries in :mod:`mlxd.catalog.read` are written once, with ``?`` parameters; what is not
standard SQL (JSON fields, timestamps as text, rounding, JSON objects) comes from a
:class:`Dialect`. PostgreSQL connections are wrapped so that ``con.execute(sql, params)``
behaves as sqlite3's does.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


class Dialect:
    """SQLite: the catalog file in MLXD_HOME, read with the stdlib driver."""

    name = "sqlite"
    # JSON, DATETIME and BOOLEAN columns come back as text and integers: decode them.
    decodes_types = False

    def json_number(self, column: str, key: str) -> str:
        return f"json_extract({column}, '$.{key}')"

    def iso_utc(self, column: str) -> str:
        """A UTC timestamp column as ISO 8601 text with its offset."""
        return f"replace({column}, ' ', 'T') || '+00:00'"

    def round2(self, expr: str) -> str:
        return f"round({expr}, 2)"

    def same_as(self, expr: str) -> str:
        """``expr`` equals the next parameter, NULL matching NULL."""
        return f"{expr} is ?"

    def utc_day(self, column: str) -> str:
        """A UTC timestamp column as its date, 'YYYY-MM-DD' text."""
        return f"substr({column}, 1, 10)"

    def seconds_between(self, start: str, end: str) -> str:
        """Seconds from one timestamp column to another, as a float."""
        return f"(julianday({end}) - julianday({start})) * 86400.0"

    def json_rows_sql(self, columns: list[tuple[str, str]], bool_columns, rest: str) -> str:
        """``select`` of one JSON object text per row, keys in ``columns``' order."""
        pairs = []
        for name, expr in columns:
            if name in bool_columns:
                expr = (
                    f"case when {expr} is null then null when {expr} then json('true') "
                    "else json('false') end"
                )
            pairs.append(f"'{name}', {expr}")
        return f"select json_object({', '.join(pairs)}) {rest}"


class PostgresDialect(Dialect):
    name = "postgresql"
    decodes_types = True  # psycopg returns dicts, datetimes and bools itself

    def json_number(self, column: str, key: str) -> str:
        return f"({column}::jsonb ->> '{key}')::float8"

    def iso_utc(self, column: str) -> str:
        return f"""to_char({column}, 'YYYY-MM-DD"T"HH24:MI:SS.US') || '+00:00'"""

    def round2(self, expr: str) -> str:
        return f"round(({expr})::numeric, 2)::float8"

    def same_as(self, expr: str) -> str:
        return f"{expr} is not distinct from ?"

    def utc_day(self, column: str) -> str:
        return f"to_char({column}, 'YYYY-MM-DD')"

    def seconds_between(self, start: str, end: str) -> str:
        return f"extract(epoch from ({end} - {start}))::float8"

    def json_rows_sql(self, columns: list[tuple[str, str]], bool_columns, rest: str) -> str:
        # json_build_object takes at most 100 arguments; row_to_json keeps the column order.
        inner = ", ".join(f'{expr} as "{name}"' for name, expr in columns)
        return f"select row_to_json(t)::text from (select {inner} {rest}) t"


SQLITE = Dialect()
POSTGRES = PostgresDialect()


class PostgresConnection:
    """A psycopg connection that takes sqlite3-style ``?`` parameters."""

    dialect = POSTGRES

    def __init__(self, con):
        self._con = con

    def execute(self, sql: str, params: Sequence[Any] = ()):
        cur = self._con.cursor()
        cur.execute(_placeholders(sql), list(params))
        return cur

    def close(self) -> None:
        self._con.close()


def _placeholders(sql: str) -> str:
    """``?`` -> ``%s`` outside string literals (and a literal ``%`` doubled)."""
    out, quoted = [], False
    for ch in sql:
        if ch == "'":
            quoted = not quoted
        if ch == "%":
            out.append("%%")
        elif ch == "?" and not quoted:
            out.append("%s")
        else:
            out.append(ch)
    return "".join(out)
