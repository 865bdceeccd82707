"""mlxd report | recommend | regressions: reading the catalog as a person deciding something.

These are read commands: plain sqlite3 through mlxd.catalog.read (no sqlmodel), and
matplotlib only when an HTML report is drawn.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import click

from mlxd.cli.context import BadUsage, UserError, get_paths
from mlxd.cli.output import echo_json, emit, output_options
from mlxd.cli.params import list_option


def _reader():
    from mlxd.catalog.read import Reader

    return Reader(get_paths())


def _since(text: str | None):
    from mlxd.reports.results import parse_since

    return parse_since(text) if text else None


def _errors():
    from mlxd.catalog.errors import NotFound, QueryError

    return (NotFound, QueryError)


@click.command()
@list_option(
    "--model",
    "models",
    metavar="REF",
    help="Only these models and their variants (comma list or repeated)",
)
@click.option("--since", metavar="WHEN", help="Only runs since a date (2026-01-31) or an age (7d)")
@list_option(
    "--machine",
    "machines",
    metavar="HOST",
    help="Only figures from these hosts (comma list or repeated)",
)
@click.option(
    "--format",
    "fmt_name",
    type=click.Choice(["md", "html"]),
    default="md",
    show_default=True,
    help="Markdown, or one self-contained HTML file with charts",
)
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    metavar="PATH",
    help="Write here ('-': standard output; default: reports/ with a date stamp)",
)
def report(models, since, machines, fmt_name, output):
    """Write a performance report (Markdown or HTML with charts) from the catalog."""
    from mlxd.reports.report import default_path, make_report

    now = datetime.now(UTC)
    reader = _reader()
    try:
        rep = make_report(
            reader, models=tuple(models), since=_since(since), machines=tuple(machines), now=now
        )
    except _errors() as e:
        raise BadUsage(str(e)) from None
    finally:
        reader.close()
    text = write_report(rep, fmt_name)
    if output is not None and str(output) == "-":
        click.echo(text, nl=False)
        return
    path = output or default_path(Path("reports"), fmt_name, now)
    if not path.parent.is_dir():
        try:
            path.parent.mkdir(parents=True)
        except OSError as e:
            raise UserError(f"cannot create folder {path.parent}: {e.strerror or e}") from None
        click.echo(f"Note: created folder {path.parent}", err=True)
    try:
        path.write_text(text, encoding="utf-8")
    except OSError as e:
        raise UserError(f"cannot write {path}: {e.strerror or e}") from None
    n = len(rep.data.families)
    click.echo(f"Wrote {path} ({n} model(s), {rep.data.total_runs:,} run(s))")


def write_report(rep, fmt_name: str) -> str:
    if fmt_name == "html":
        from mlxd.reports.html import render_html

        return render_html(rep)
    from mlxd.reports.markdown import render_markdown

    return render_markdown(rep)


@click.command()
@click.argument("ref")
@click.option(
    "--memory",
    metavar="SIZE",
    help="Memory budget, e.g. 16GB (weights plus peak; default: this machine's)",
)
@click.option(
    "--max-kl",
    type=click.FloatRange(min=0),
    metavar="X",
    help="Largest KL divergence from the base to accept",
)
@click.option(
    "--min-tps",
    type=click.FloatRange(min=0),
    metavar="N",
    help="Slowest generation tok/s to accept",
)
@click.option(
    "--min-accuracy",
    type=click.FloatRange(0, 100),
    metavar="PCT",
    help="Lowest task accuracy to accept, in percent (its newest eval run)",
)
@click.option(
    "--max-accuracy-drop",
    type=click.FloatRange(min=0),
    metavar="PT",
    help="Largest accuracy drop against the base to accept, in points",
)
@click.option(
    "--machine",
    metavar="HOST",
    help="Use figures from this host (default: the one with most variants measured)",
)
@output_options("show")
def recommend(ref, memory, max_kl, min_tps, min_accuracy, max_accuracy_drop, machine, fmt):
    """Pick the fastest variant of a model that fits the memory and quality bounds."""
    from mlxd.reports.data import build_report
    from mlxd.reports.recommend import RecommendError, parse_memory
    from mlxd.reports.recommend import recommend as pick

    reader = _reader()
    try:
        budget = parse_memory(memory) if memory else None
        data = build_report(reader, models=(ref,))
    except (*_errors(), RecommendError) as e:
        raise BadUsage(str(e)) from None
    finally:
        reader.close()
    (family,) = data.families
    if budget is None:
        budget = _default_memory(data, machine)
    rec = pick(
        family,
        data.systems,
        memory_bytes=budget,
        max_kl=max_kl,
        min_tps=min_tps,
        machine=machine,
        min_accuracy=None if min_accuracy is None else min_accuracy / 100,
        max_accuracy_drop=None if max_accuracy_drop is None else max_accuracy_drop / 100,
    )
    if fmt == "json":
        echo_json(rec.to_dict())
    else:
        for line in rec.lines:
            click.echo(line)
    if rec.pick is None:
        raise SystemExit(1)


def _default_memory(data, machine: str | None) -> int | None:
    """No --memory: this machine's memory budget for jobs, or with --machine another host,
    the RAM its figures recorded; one line on stderr says which."""
    from mlxd.daemon import hosts
    from mlxd.vocab.fmt import size

    if machine and machine != hosts.host_id():
        ram = max((s.ram_bytes or 0 for s in data.systems.values() if s.host == machine), default=0)
        if ram:
            click.echo(
                f"Note: memory {size(ram)}, the RAM of {machine} (--memory to choose)", err=True
            )
        return ram or None
    from mlxd.scheduling.admission import memory_budget_bytes
    from mlxd.vocab.settings import MEMORY_BUDGET_BYTES

    budget = memory_budget_bytes()
    click.echo(
        f"Note: memory {size(budget)}, this machine's budget ({MEMORY_BUDGET_BYTES.name} or 75% of its "
        "RAM; --memory to choose)",
        err=True,
    )
    return budget


@click.command()
@click.option("--since", metavar="WHEN", help="Only runs since a date (2026-01-31) or an age (7d)")
@list_option("--model", "models", metavar="REF", help="Only these models (comma list or repeated)")
@list_option(
    "--machine",
    "machines",
    metavar="HOST",
    help="Only runs on these hosts (comma list or repeated)",
)
@click.option("--slower", is_flag=True, help="Only slowdowns")
@output_options()
def regressions(since, models, machines, slower, fmt):
    """Speed changes beyond the noise between mlx / mlx-lm versions, per machine."""
    from mlxd.reports.regressions import find_changes
    from mlxd.vocab import fmt as f

    reader = _reader()
    try:
        changes = find_changes(
            reader, models=models, since=_since(since), machines=machines, only_slower=slower
        )
    except _errors() as e:
        raise BadUsage(str(e)) from None
    finally:
        reader.close()
    if fmt == "text" and changes:
        click.echo("Changes whose 95% confidence intervals do not overlap (mean ± 95% CI):")
    _emit_changes(fmt, changes, f)


def _emit_changes(fmt: str, changes, f) -> None:
    from mlxd.reports.regressions import Change

    rows = []
    for ch in changes:
        d = ch.to_dict()
        d["_table"] = (
            ch.verdict,
            ch.model,
            ch.host,
            f.point_label(ch.point),
            "gen" if ch.metric == "generation_tps" else "prompt",
            ch.before,
            ch.after,
            f.pm(ch.a.mean, ch.a.ci95),
            f.pm(ch.b.mean, ch.b.ci95),
            f"{ch.change_pct:+.1f}%",
        )
        rows.append(d)
    if fmt in ("json", "jsonl", "csv"):
        for d in rows:
            d.pop("_table")
    emit(
        fmt,
        rows,
        headers=[
            "VERDICT",
            "MODEL",
            "HOST",
            "POINT",
            "METRIC",
            "BEFORE",
            "AFTER",
            "BEFORE TOK/S",
            "AFTER TOK/S",
            "CHANGE",
        ],
        table=lambda d: d["_table"],
        empty="No speed change beyond the measured noise.",
        fields=Change.FIELDS,
    )
