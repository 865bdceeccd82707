"""``mlxd results --sql``: the result rows as SQL that loads into sqlite3 (llama-bench's
``-o sql`` in spirit): one ``CREATE TABLE`` and one ``INSERT`` per run, in a transaction."""

from __future__ import annotations

from collections.abc import Iterable
from typing import IO, Any

from mlxd.catalog.read import BOOL_COLUMNS, Reader, ResultFilter
from mlxd.vocab.choices import BENCH_POINT_KEYS

TABLE = "mlxd_results"

_INTEGER = {
    "run_id",
    "job_id",
    "model_id",
    "system_id",
    *BENCH_POINT_KEYS,
    "trials",
    "warmup",
    "seed",
    "quality_run_id",
    *BOOL_COLUMNS,
}
_TEXT = {
    "model",
    "quantization",
    "created_at",
    "power_source",
    "thermal_state",
    "quality_base",
    "host",
    "cpu",
    "chip",
    "backend",
    "os",
    "python_version",
    "mlx_version",
    "mlx_lm_version",
    "mlxd_version",
}


def column_type(name: str) -> str:
    if name in _TEXT:
        return "TEXT"
    if name in _INTEGER or name.endswith("_bytes"):
        return "INTEGER"
    return "REAL"


def literal(value: Any) -> str:
    if value is None:
        return "NULL"
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return (
            repr(value) if value == value and value not in (float("inf"), float("-inf")) else "NULL"
        )
    return "'" + str(value).replace("'", "''") + "'"


def sql_lines(names: list[str], rows: Iterable[Iterable[Any]]) -> Iterable[str]:
    cols = ", ".join(names)
    yield f"CREATE TABLE IF NOT EXISTS {TABLE} ("
    yield ",\n".join(f"  {n} {column_type(n)}" for n in names)
    yield ");"
    yield "BEGIN;"
    for row in rows:
        yield f"INSERT INTO {TABLE} ({cols}) VALUES ({', '.join(literal(v) for v in row)});"
    yield "COMMIT;"


def write_sql(reader: Reader, flt: ResultFilter, out: IO[str]) -> int:
    """Write the runs as SQL to ``out``; returns how many."""
    names, rows = reader.result_csv_rows(flt)
    count = 0

    def counted():
        nonlocal count
        for row in rows:
            count += 1
            yield row

    for line in sql_lines(names, counted()):
        out.write(line + "\n")
    return count
