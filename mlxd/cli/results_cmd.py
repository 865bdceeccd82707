"""mlxd results: the benchmark table, filtered, or two things compared.

This module must not import sqlmodel or alembic (a third of a second before any work):
the reading is done by mlxd.reports.results with plain sqlite3.
"""

from __future__ import annotations

import math
import sys

import click

from mlxd.cli.context import BadUsage, get_paths
from mlxd.cli.output import (
    emit,
    empty_text,
    human_bytes,
    output_options,
    render_table,
    sig,
    when,
)
from mlxd.cli.params import list_option
from mlxd.vocab.choices import DEFAULT_PREFILL_STEP_SIZE

TABLE_WIDTH = 120  # the text table's width unless --wide


def _pm(mean, std, digits=1) -> str:
    if mean is None:
        return ""
    return f"{mean:.{digits}f} ± {std:.{digits}f}" if std else f"{mean:.{digits}f}"


@click.command()
@list_option("--model", "models", metavar="REF", help="Only these models (comma list or repeated)")
@list_option(
    "--machine",
    "machines",
    metavar="HOST",
    help="Only runs on these hosts (comma list or repeated)",
)
@list_option(
    "--adapter",
    "adapters",
    metavar="ADAPTER",
    help="Only runs with these adapters, unfused (comma list or repeated)",
)
@click.option(
    "--since", metavar="WHEN", help="Only runs since a date (2026-01-31) or an age (7d, 12h, 2w)"
)
@list_option(
    "--mlx-version",
    "mlx_versions",
    metavar="V",
    help="Only runs with these mlx versions (comma list or repeated)",
)
@click.option(
    "--compare", nargs=2, metavar="A B", help="B against A: two models, machines or mlx versions"
)
@click.option(
    "--compare-by",
    type=click.Choice(["model", "machine", "mlx"]),
    help="What A and B name (default: models if both are, else machines, else mlx versions)",
)
@click.option(
    "--limit",
    type=click.IntRange(min=0),
    default=1000,
    show_default=True,
    help="Only the newest N runs (0: all)",
)
@click.option("--sql", "sql", is_flag=True, help="Output as SQL (CREATE TABLE and INSERTs)")
@click.option(
    "--wide", is_flag=True, help=f"Every column (default: what fits {TABLE_WIDTH} columns)"
)
@output_options()
def results(
    models, machines, adapters, since, mlx_versions, compare, compare_by, limit, sql, wide, fmt
):
    """Benchmark results: tok/s, time to first token, peak memory, roofline %."""
    from mlxd.catalog.errors import NotFound, QueryError
    from mlxd.catalog.read import Reader, ResultFilter
    from mlxd.reports.results import parse_since

    if compare_by and not compare:
        raise BadUsage("--compare-by needs --compare A B")
    if sql and fmt != "text":
        raise BadUsage(f"Cannot use --sql and --{fmt} together")
    if sql and compare:
        raise BadUsage("--sql exports the runs; leave out --compare")
    reader = Reader(get_paths())
    try:
        flt = ResultFilter(
            models=tuple(models),
            machines=tuple(machines),
            since=parse_since(since) if since else None,
            mlx_versions=tuple(mlx_versions),
            adapters=tuple(adapters),
            limit=0 if compare else limit,
        )
        if compare:
            _compare(reader, compare, compare_by, flt, fmt)
        else:
            _results(reader, flt, "sql" if sql else fmt, wide=wide)
    except (QueryError, NotFound) as e:
        raise BadUsage(str(e)) from None
    finally:
        reader.close()


def _results(reader, flt, fmt: str, *, wide: bool = False) -> None:
    from mlxd.reports.results import write_results_json

    if fmt == "sql":
        from mlxd.catalog.export import write_sql

        _note_hidden(reader.hidden_by_limit(flt, write_sql(reader, flt, sys.stdout)), flt)
        return
    if fmt == "jsonl":
        shown = 0
        for line in reader.result_json_rows(flt):
            click.echo(line)
            shown += 1
        _note_hidden(reader.hidden_by_limit(flt, shown), flt)
        return
    if fmt == "json":
        # SQLite writes each row's JSON (see mlxd.catalog.read).
        sys.stdout.flush()
        try:
            shown = write_results_json(reader, flt, sys.stdout.buffer)
            sys.stdout.buffer.flush()
        except BrokenPipeError:  # `mlxd results --json | head`: the reader has had enough
            import os

            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            return
        _note_hidden(reader.hidden_by_limit(flt, shown), flt)
        return
    if fmt == "csv":
        import csv

        names, rows = reader.result_csv_rows(flt)
        writer = csv.writer(sys.stdout, lineterminator="\n")
        writer.writerow(names)
        shown = 0
        for row in rows:
            writer.writerow(row)
            shown += 1
        _note_hidden(reader.hidden_by_limit(flt, shown), flt)
        return
    rows = reader.result_rows(flt)
    if not rows:
        click.echo(
            empty_text(
                "benchmark results",
                _filter_phrases(flt),
                "No benchmark results yet. Queue one with 'mlxd bench REF'.",
            )
        )
        return
    _note_hidden(reader.hidden_by_limit(flt, len(rows)), flt)
    echo_results_table(rows, md=fmt == "md", wide=wide)


def _filter_phrases(flt) -> list[str]:
    """What the filters of ``flt`` ask for, in words (for the line an empty table prints)."""

    def quoted(values) -> str:
        return " or ".join(f"'{v}'" for v in values)

    return [
        flt.models and f"of model {quoted(flt.models)}",
        flt.adapters and f"with adapter {quoted(flt.adapters)}",
        flt.machines and f"on machine {quoted(flt.machines)}",
        flt.mlx_versions and f"with mlx {quoted(flt.mlx_versions)}",
        flt.since and f"since {when(flt.since)}",
    ]


def echo_job_results(job_ids) -> None:
    """The table of the runs these jobs measured (what `bench --wait` ends with)."""
    from mlxd.catalog.read import Reader, ResultFilter

    with Reader(get_paths()) as reader:
        rows = reader.result_rows(ResultFilter(job_ids=tuple(job_ids)))
    if rows:
        echo_results_table(rows)


def echo_headline(job_id: int) -> None:
    """What bench --wait ends with in the modes with a headline of their own: the draft's
    acceptance rate and speed-up, a prompt cache's cached against cold time to first token,
    the serving bench's latency percentiles per concurrency."""
    from mlxd.catalog.read import Reader, ResultFilter

    with Reader(get_paths()) as reader:
        rows = reader.result_rows(ResultFilter(job_ids=(job_id,)))
    if rows:
        click.echo(headline_text(rows))


def _x(value) -> str:
    return "" if value is None else f"{value:.2f}x"


def _s(value, digits: int = 3, scale: float = 1.0) -> str:
    return "" if value is None else f"{value * scale:.{digits}f}"


def headline_text(rows) -> str:
    """The headline table of one special-mode bench job's runs (see :func:`echo_headline`)."""
    first = rows[0]
    if first["mode"] == "serve":
        table = [
            (
                r["concurrency"],
                r["requests"],
                r["errors"],
                _s(r["generation_tps_mean"], 1),
                *(_s(r[f"ttft_{p}_s"]) for p in ("p50", "p95", "p99")),
                *(_s(r[f"itl_{p}_s"], 1, 1000) for p in ("p50", "p95", "p99")),
            )
            for r in rows
        ]
        headers = [
            "CLIENTS",
            "REQUESTS",
            "ERRORS",
            "TOTAL TOK/S",
            *(f"TTFT {p} S" for p in ("P50", "P95", "P99")),
            *(f"ITL {p} MS" for p in ("P50", "P95", "P99")),
        ]
        return (
            f"Serving '{first['model']}' (mlx_lm.server), -p {first['prompt_tokens']} "
            f"-g {first['gen_tokens']}, per number of simultaneous clients:\n"
            + render_table(headers, table)
        )
    if first["draft_model"]:
        table = [
            (
                r["prompt_tokens"],
                r["gen_tokens"],
                r["trials"],
                _s(_alone(r), 1),
                _s(r["generation_tps_mean"], 1),
                _x(r["draft_speedup"]),
                "" if r["acceptance_rate"] is None else f"{r['acceptance_rate']:.1%}",
            )
            for r in rows
        ]
        headers = ["P", "G", "N", "ALONE GEN TOK/S", "DRAFTED GEN TOK/S", "SPEED-UP", "ACCEPTED"]
        return (
            f"Speculative decoding: '{first['model']}' with draft '{first['draft_model']}', "
            f"{first['num_draft_tokens']} tokens drafted per step (means over N trials):\n"
            + render_table(headers, table)
        )
    if first["prompt_cache"]:
        table = [
            (
                r["prompt_tokens"],
                r["gen_tokens"],
                r["trials"],
                r["cached_tokens"],
                _s(r["ttft_cached_s_mean"]),
                _s(r["ttft_s_mean"]),
                _x(
                    r["ttft_s_mean"] / r["ttft_cached_s_mean"]
                    if r["ttft_s_mean"] and r["ttft_cached_s_mean"]
                    else None
                ),
            )
            for r in rows
        ]
        headers = ["P", "G", "N", "CACHED TOKENS", "CACHED TTFT S", "COLD TTFT S", "SPEED-UP"]
        return (
            f"Prompt cache '{first['prompt_cache']}' on '{first['model']}': time to first "
            "token for P new tokens after the cached prefix, against the whole text cold "
            "(means over N trials):\n" + render_table(headers, table)
        )
    return ""


def _alone(r) -> float | None:
    """The model's own generation speed in a draft run (the run stores the drafted speed
    and the speed-up over it)."""
    if r["generation_tps_mean"] is None or not r["draft_speedup"]:
        return None
    return r["generation_tps_mean"] / r["draft_speedup"]


def echo_adapter_comparison(job_id: int) -> None:
    """What bench --adapter ends with: base, base + adapter (unfused) and the fused model,
    measured side by side in one job, each against the base."""
    from mlxd.catalog.read import Reader, ResultFilter

    with Reader(get_paths()) as reader:
        rows = reader.result_rows(ResultFilter(job_ids=(job_id,)))
    click.echo(adapter_comparison_text(rows))


def adapter_comparison_text(rows) -> str:
    from mlxd.vocab.choices import BENCH_POINT_KEYS
    from mlxd.vocab.stats import pool, ratio_of_means

    base_ids = {r["model_id"] for r in rows if r["adapter"] is not None}

    def variant(r) -> str:
        if r["adapter"] is not None:
            return "adapter"
        return "base" if r["model_id"] in base_ids else "fused"

    by_point: dict[tuple, dict[str, dict]] = {}
    for r in rows:
        by_point.setdefault(tuple(r[k] for k in BENCH_POINT_KEYS), {})[variant(r)] = r
    metrics = (
        ("prompt_tps", 1, ""),
        ("generation_tps", 1, ""),
        ("ttft_s", 3, ""),
        ("peak_memory_bytes", 0, "bytes"),
    )

    def side(r, metric):
        mean = r[f"{metric}_mean"] if metric != "peak_memory_bytes" else r[metric]
        std = r.get(f"{metric}_std") if metric != "peak_memory_bytes" else 0.0
        if mean is None:
            return None
        return pool([(r["trials"] or 1, mean, std or 0.0)])

    table = []
    for point, sides in by_point.items():
        base = sides.get("base")
        for name in ("base", "adapter", "fused"):
            r = sides.get(name)
            if r is None:
                continue
            cells = []
            for metric, digits, unit in metrics:
                s, b = side(r, metric), side(base, metric) if base else None
                if s is None:
                    cells += ["", ""]
                    continue
                value = human_bytes(int(s.mean)) if unit else f"{s.mean:.{digits}f}"
                if name == "base" or b is None:
                    cells += [value, "1.000" if name == "base" else ""]
                    continue
                ratio, ci = ratio_of_means(b, s)
                cells += [value, _ratio(ratio, math.nan if unit else ci)]  # one peak: no CI
            p, g = point[0], point[1]
            table.append((f"p={p} g={g}", name, r["model"], *cells))
    headers = [
        "POINT",
        "SIDE",
        "MODEL",
        "PROMPT TOK/S",
        "/BASE",
        "GEN TOK/S",
        "/BASE",
        "TTFT S",
        "/BASE",
        "PEAK MEM",
        "/BASE",
    ]
    return (
        "Side by side in one job (each /BASE: ratio of means ± 95% CI):\n"
        + render_table(headers, table)
        + "\nPEAK MEM of a side: its own weights plus what its trials added "
        "(every side was loaded at once)."
    )


# (header, cell, values that say nothing (a column of only these is left out), how soon the
# column goes when the table is wider than TABLE_WIDTH: 0 never, higher first)
_COLUMNS = (
    ("RUN", lambda r: f"{r['run_id']}{'~' if r['noisy'] else ''}", (), 0),
    ("MODEL", lambda r: r["model"], (), 0),
    ("QUANT", lambda r: r["quantization"] or "", (), 0),
    ("MODE", lambda r: _mode(r), ("generate",), 1),
    ("P", lambda r: r["prompt_tokens"], (), 0),
    ("G", lambda r: r["gen_tokens"], (), 0),
    ("B", lambda r: r["batch_size"], ("1",), 2),
    ("DEPTH", lambda r: r["depth"], ("0",), 2),
    ("KV", lambda r: r["kv_bits"] or "", (), 6),
    ("PREFILL", lambda r: r["prefill_step_size"] or "", (str(DEFAULT_PREFILL_STEP_SIZE),), 6),
    ("MAXKV", lambda r: r["max_kv_size"] or "", (), 6),
    ("N", lambda r: r["trials"], (), 3),
    ("PROMPT TOK/S ±SD", lambda r: _pm(r["prompt_tps_mean"], r["prompt_tps_std"]), (), 0),
    ("GEN TOK/S ±SD", lambda r: _pm(r["generation_tps_mean"], r["generation_tps_std"]), (), 0),
    (
        "P+G TOK/S",
        lambda r: "" if r["combined_tps_mean"] is None else f"{r['combined_tps_mean']:.1f}",
        (),
        8,
    ),
    ("TTFT S ±SD", lambda r: _pm(r["ttft_s_mean"], r["ttft_s_std"], 3), (), 4),
    ("PEAK MEM", lambda r: human_bytes(r["peak_memory_bytes"]), (), 0),
    ("ROOF %", lambda r: "" if r["roofline_pct"] is None else f"{r['roofline_pct']:.1f}", (), 7),
    ("PPL", lambda r: sig(r["perplexity"], 4), (), 1),
    ("KL", lambda r: sig(r["kl_mean"], 3), (), 1),
    ("HOST", lambda r: r["host"], (), 3),
    ("MLX", lambda r: r["mlx_version"], (), 9),
    ("WHEN", lambda r: when(r["created_at"]), (), 5),
)


def echo_results_table(rows, *, md: bool = False, wide: bool = False) -> None:
    """The runs as a table: every column with --wide (and in Markdown); otherwise what fits
    TABLE_WIDTH, leaving out columns with nothing to say, then the least important."""
    cells = [[("" if c is None else str(c)) for c in map(fn, rows)] for _, fn, _, _ in _COLUMNS]
    keep = list(range(len(_COLUMNS)))
    dropped = []
    if not (wide or md):
        keep = [i for i in keep if any(c not in ("", *_COLUMNS[i][2]) for c in cells[i])]

        def width(cols) -> int:
            return sum(max(len(_COLUMNS[i][0]), *map(len, cells[i])) for i in cols) + 2 * (
                len(cols) - 1
            )

        for i in sorted((i for i in keep if _COLUMNS[i][3]), key=lambda i: -_COLUMNS[i][3]):
            if width(keep) <= TABLE_WIDTH:
                break
            keep.remove(i)
            dropped.append(_COLUMNS[i][0])
    headers = [_COLUMNS[i][0] for i in keep]
    table = [[cells[i][n] for i in keep] for n in range(len(rows))]
    click.echo(render_table(headers, table, markdown=md))
    notes = ["± is the standard deviation over the trials (--compare shows 95% CIs)"]
    if any(r["noisy"] for r in rows):
        notes.append("~ marks a noisy run")
    if any(r["perplexity"] is not None for r in rows):
        notes.append("PPL and KL: the model's newest quality run")
    if dropped:
        notes.append(f"--wide adds {', '.join(dropped)}")
    text = "; ".join(notes) + "."
    if md:
        click.echo("\n" + text)
    else:
        import textwrap

        click.echo(textwrap.fill(text, TABLE_WIDTH))


def _mode(r: dict) -> str:
    """generate (plain), batch, serve c=N; with a draft model or a prompt cache noted."""
    mode = r.get("mode") or "generate"
    if mode == "serve" and r.get("concurrency"):
        mode = f"serve c={r['concurrency']}"
    if r.get("draft_model"):
        mode += f" +draft {r['draft_model']}"
    if r.get("prompt_cache"):
        mode += " +cache"
    return mode


def _note_hidden(hidden: int, flt) -> None:
    # On stderr: --json and --csv output stays clean, and a script still hears of it.
    if hidden:
        click.echo(
            f"Note: the newest {flt.limit} runs; {hidden} older ones not shown (--limit 0: all)",
            err=True,
        )


def _compare(reader, ab, by, flt, fmt: str) -> None:
    from mlxd.reports.results import compare, iter_compare_dicts

    a, b = ab
    cmp = compare(reader, a, b, by, flt)
    if fmt in ("json", "jsonl", "csv"):
        emit(fmt, list(iter_compare_dicts(cmp)))
        return
    what = {"model": "models", "machine": "machines", "mlx": "mlx versions"}[cmp.by]
    if not cmp.rows:
        click.echo(f"No benchmark point was measured on both {a} and {b} ({what}).")
        return
    headers = [
        *(c.upper() for c in cmp.rows[0].context),
        "P",
        "G",
        "B",
        "DEPTH",
        "KV",
        "PREFILL",
        "MAXKV",
        "METRIC",
        f"A: {a}",
        f"B: {b}",
        "B/A (95%)",
        "VERDICT",
    ]
    table = []
    for row in cmp.rows:
        p = row.point
        digits = 3 if row.metric == "ttft_s" else 1
        table.append(
            (
                *row.context.values(),
                p["prompt_tokens"],
                p["gen_tokens"],
                p["batch_size"],
                p["depth"],
                p["kv_bits"] or "",
                p["prefill_step_size"] or "",
                p["max_kv_size"] or "",
                _METRIC_LABELS[row.metric],
                _side(row.metric, row.a, digits),
                _side(row.metric, row.b, digits),
                _ratio(row.ratio, row.ratio_ci95),
                row.verdict,
            )
        )
    click.echo(f"Comparing {what}: B = {b} against A = {a} (mean ± 95% CI, n trials)")
    click.echo(render_table(headers, table, markdown=fmt == "md"))
    if cmp.unmatched_a or cmp.unmatched_b:
        click.echo(
            f"Not compared: {cmp.unmatched_a} point(s) measured only on {a}, "
            f"{cmp.unmatched_b} only on {b}.",
            err=True,
        )


_METRIC_LABELS = {
    "prompt_tps": "prompt tok/s",
    "generation_tps": "gen tok/s",
    "ttft_s": "TTFT s",
    "peak_memory_bytes": "peak memory",
}


def _side(metric: str, s, digits: int) -> str:
    if metric == "peak_memory_bytes":
        return human_bytes(int(s.mean)) + f" (n={s.n})"
    ci = f" ± {s.ci95:.{digits}f}" if math.isfinite(s.ci95) else ""
    return f"{s.mean:.{digits}f}{ci} (n={s.n})"


def _ratio(ratio: float, ci: float) -> str:
    if not math.isfinite(ratio):
        return ""
    return f"{ratio:.3f} ± {ci:.3f}" if math.isfinite(ci) else f"{ratio:.3f}"
