"""How commands print: one set of formats for every list and show command, tables, units."""

from __future__ import annotations

import csv
import functools
import io
import json
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

import click

from mlxd.vocab.fmt import sig  # noqa: F401 (re-exported: numbers never in exponent form)
from mlxd.vocab.fmt import size as human_bytes  # noqa: F401 (re-exported: one byte format)

FORMAT_HELP = {
    "json": "Output as JSON",
    "csv": "Output as CSV",
    "md": "Output as a Markdown table",
    "jsonl": "Output as JSON lines (one object per line)",
}
LIST_FORMATS = ("json", "csv", "md", "jsonl")
SHOW_FORMATS = ("json",)


def output_options(kind: str = "list") -> Callable:
    """The same format flags on every list (``--json --csv --md --jsonl``) and show
    (``--json``) command, sqlite-utils style. The command gets one ``fmt`` argument:
    ``"text"`` (the default table) or the chosen format; two formats at once are refused."""
    formats = LIST_FORMATS if kind == "list" else SHOW_FORMATS

    def decorator(fn):
        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            chosen = [f for f in formats if kwargs.pop(f"{f}_", False)]
            if len(chosen) > 1:
                raise click.UsageError(f"Cannot use --{chosen[0]} and --{chosen[1]} together")
            return fn(*args, fmt=chosen[0] if chosen else "text", **kwargs)

        for f in reversed(formats):
            wrapper = click.option(f"{f}_", f"--{f}", is_flag=True, help=FORMAT_HELP[f])(wrapper)
        wrapper.output_kind = kind  # the contract test reads it
        return wrapper

    return decorator


def emit(
    fmt: str,
    rows: Sequence[dict[str, Any]],
    *,
    headers: Sequence[str] = (),
    table: Callable[[dict[str, Any]], Sequence[Any]] | None = None,
    empty: str = "",
    fields: Sequence[str] | None = None,
) -> None:
    """Print list rows in ``fmt``: machine formats carry every field; the text and Markdown
    tables show ``table(row)`` under ``headers``. A CSV of no rows still has its header:
    ``fields``, or the columns of the query the rows came from (``Reader`` rows)."""
    if fmt == "json":
        echo_json(list(rows))
    elif fmt == "jsonl":
        for row in rows:
            click.echo(json.dumps(jsonable(row)))
    elif fmt == "csv":
        echo_csv(rows, fields if fields is not None else getattr(rows, "columns", None))
    elif not rows and fmt == "text":
        if empty:
            click.echo(empty)
    else:
        assert table is not None
        click.echo(render_table(headers, [table(r) for r in rows], markdown=fmt == "md"))


def echo_facts(facts: Sequence[tuple[str, Any]]) -> None:
    """A show command's text form: one aligned ``key  value`` line per fact that has a value."""
    shown = [(k, v) for k, v in facts if v not in (None, "")]
    width = max((len(k) for k, _ in shown), default=0)
    for k, v in shown:
        click.echo(f"{k.ljust(width)}  {v}")


def jsonable(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if hasattr(value, "model_fields"):
        return jsonable(row_dict(value))
    if isinstance(value, dict):
        return {k: jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    return value


def row_dict(row: Any) -> dict[str, Any]:
    """A catalog row (a Store's SQLModel row or a Reader's Row) as a dict, in column order."""
    if isinstance(row, dict):
        return dict(row)
    return {name: getattr(row, name) for name in type(row).model_fields}


def echo_json(value: Any) -> None:
    click.echo(json.dumps(jsonable(value), indent=2))


def echo_csv(rows: Sequence[dict[str, Any]], fields: Sequence[str] | None = None) -> None:
    buf = io.StringIO()
    if rows or fields:
        writer = csv.DictWriter(buf, fieldnames=list(rows[0]) if rows else list(fields))
        writer.writeheader()
        for row in rows:
            writer.writerow({k: _csv_cell(v) for k, v in jsonable(row).items()})
    click.echo(buf.getvalue(), nl=False)


def _csv_cell(v: Any) -> Any:
    return json.dumps(v) if isinstance(v, dict | list) else v


def render_table(headers: Sequence[str], rows: Sequence[Sequence[Any]], *, markdown=False) -> str:
    cells = [[("" if c is None else str(c)) for c in row] for row in rows]
    if markdown:
        out = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
        out += ["| " + " | ".join(r) + " |" for r in cells]
        return "\n".join(out)
    widths = [max([len(h)] + [len(r[i]) for r in cells]) for i, h in enumerate(headers)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip()]
    for r in cells:
        lines.append("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())
    return "\n".join(lines)


def human_count(n: int | None) -> str:
    if n is None:
        return ""
    for unit, scale in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= scale:
            return f"{n / scale:.1f}{unit}"
    return str(n)


def when(dt: datetime | None) -> str:
    if dt is None:
        return ""
    return dt.astimezone().strftime("%Y-%m-%d %H:%M:%S")


def empty_text(what: str, filters: Sequence[str], otherwise: str) -> str:
    """The line an empty list prints: with filters given it names them ("No jobs of kind
    bench with status failed."), so a filter that matched nothing is not read as an empty
    catalog; without, ``otherwise`` (which may say how to make the first one)."""
    given = [f for f in filters if f]
    return f"No {what} {' '.join(given)}." if given else otherwise
