"""mlxd sweep REF --bits ... | sweep show ID | sweep list.

``sweep`` is a group so that ``show`` and ``list`` live next to the submitting form, and
anything that is not a subcommand name is handed to ``run``: ``mlxd sweep REF --bits 4,8``
(the documented contract) is ``mlxd sweep run REF --bits 4,8``. A model that happens to be
called "show" or "list" is still reachable with the explicit ``mlxd sweep run show``.
"""

from __future__ import annotations

import click

from mlxd.cli.context import BadUsage, UserError, catalog_errors, get_paths, get_reader, get_store
from mlxd.cli.groups import DefaultGroup
from mlxd.cli.output import echo_json, emit, output_options, render_table, when
from mlxd.cli.output import sig as significant
from mlxd.cli.params import int_list, list_option, spec_default
from mlxd.cli.quality_cmd import text_options
from mlxd.cli.submit import (
    check_timeout,
    daemon_running,
    echo_notes,
    follow,
    job_options,
    note_no_daemon,
    queue,
)
from mlxd.jobs.sweeps import SweepRequest
from mlxd.vocab.choices import DTYPES, QUANT_MODES, QUANT_RECIPES

MICROSCALING_MODES = tuple(m for m in QUANT_MODES if m != "affine")


def _sweep(name: str) -> dict:
    """A sweep option's default, from the SweepRequest it fills, shown in help."""
    return {"default": spec_default(SweepRequest, name), "show_default": True}


@click.group(cls=DefaultGroup)
def sweep():
    """Quantize a model many ways, then benchmark and score every variant.

    \b
    mlxd sweep REF --bits 4,8 --group-size 32,64   queue a sweep (same as 'sweep run REF ...')
    mlxd sweep show ID                             its table, like mlx-lm's BENCHMARKS.md
    """


@sweep.command("run")
@click.argument("ref")
@list_option("--bits", **_sweep("bits"), help="Bit widths, e.g. 3,4,6,8")
@list_option("--group-size", **_sweep("group_sizes"), help="Group sizes, e.g. 32,64")
@list_option(
    "--recipe",
    "recipes",
    choices=QUANT_RECIPES,
    help="Also mixed-precision recipes (comma list or repeated)",
)
@list_option(
    "--mode",
    "modes",
    choices=MICROSCALING_MODES,
    help="Also microscaling modes, e.g. mxfp4,nvfp4,mxfp8 (comma list or repeated)",
)
@click.option(
    "--dtype",
    type=click.Choice(DTYPES),
    help="dtype of scales and unquantized layers (default: float32 on CPU)",
)
@click.option("-p", "--prompt-tokens", type=click.IntRange(min=1), **_sweep("prompt_tokens"))
@click.option("-g", "--gen-tokens", type=click.IntRange(min=1), **_sweep("gen_tokens"))
@click.option("-n", "--trials", type=click.IntRange(min=1), **_sweep("trials"))
@click.option("--warmup", type=click.IntRange(min=0), **_sweep("warmup"))
@text_options("Quality: ")
@list_option(
    "--eval",
    "eval_tasks",
    metavar="FILE|NAME",
    help="Also an eval job per variant on these tasks (a JSONL file, a builtin task, 'builtin')",
)
@click.option(
    "--eval-limit", type=click.IntRange(min=1), metavar="N", help="Eval: at most N items per task"
)
@job_options
@catalog_errors
def run(
    ref,
    bits,
    group_size,
    recipes,
    modes,
    dtype,
    prompt_tokens,
    gen_tokens,
    trials,
    warmup,
    text_tokens,
    text,
    eval_tasks,
    eval_limit,
    wait,
    after,
    priority,
    timeout_s,
    pool,
):
    """Queue a sweep: quantize, bench, quality (and eval) jobs per variant and base."""
    from mlxd.jobs.sweeps import SweepRequest, new_steps, plan_sweep, record_sweep
    from mlxd.scheduling import Node

    check_timeout(timeout_s)

    store = get_store()
    running = daemon_running(wait=wait, what="the sweep")
    req = SweepRequest(
        base=ref,
        # Each value once: --bits 8,8 is one variant, not two.
        bits=int_list(bits, "--bits"),
        group_sizes=int_list(group_size, "--group-size"),
        recipes=list(recipes),
        modes=list(modes),
        dtype=dtype,
        prompt_tokens=prompt_tokens,
        gen_tokens=gen_tokens,
        trials=trials,
        warmup=warmup,
        max_tokens=text_tokens,
        text=text,
        eval_tasks=list(eval_tasks),
        eval_limit=eval_limit,
    )
    if eval_limit is not None and not eval_tasks:
        raise BadUsage("--eval-limit needs --eval TASK")
    plan = plan_sweep(get_reader(), req)
    # One graph, queued whole or not at all: the first jobs wait on --after, the rest on
    # their variant's quantize (one of this plan, or an earlier sweep's job).
    steps = new_steps(plan)
    index = {id(step): i for i, (step, _) in enumerate(steps)}
    nodes = [
        Node(
            step.kind,
            step.spec,
            after=None if id(gate) in index else (gate.job_id if gate else after),
            after_node=index.get(id(gate)),
            priority=priority,
            timeout_s=timeout_s,
        )
        for step, gate in steps
    ]
    queued = queue(nodes, pool=pool)
    for (step, _), job_id in zip(steps, queued.job_ids, strict=True):
        step.job_id = job_id
    sw = record_sweep(store, plan)
    notes = queued.notes
    click.echo(f"Sweep {sw.id} of {plan.base_name}: {len(plan.variants) - 1} variant(s) + base")
    for v in sw.variants:
        jobs = ", ".join(
            f"{k.removesuffix('_job')} {v[k]}"
            + (" (reused)" if k.removesuffix("_job") in v["reused"] else "")
            for k in ("quantize_job", "bench_job", "quality_job", "eval_job")
            if v.get(k) is not None
        )
        click.echo(f"  {v['variant']:<16} {v['model']:<28} {jobs}")
    reused = [v["variant"] for v in sw.variants if "quantize" in v["reused"]]
    if reused:
        click.echo(f"Reused existing variant(s), not quantized again: {', '.join(reused)}")
    echo_notes(notes)
    if not running:
        note_no_daemon("the jobs start")
    if wait:
        _follow_all(sw)
        click.echo()
        _print_table(sw.id, fmt="text")
    else:
        click.echo(f"See the table with: mlxd sweep show {sw.id}")


def _follow_all(sw) -> None:
    from mlxd.reports.sweeps import sweep_jobs

    failed = []
    for job_id in sweep_jobs(sw):
        try:
            follow(job_id, show_progress=True)
        except UserError as e:
            failed.append(job_id)
            click.echo(f"Error: {e.message}", err=True)
    if failed:
        _print_table(sw.id, fmt="text")
        raise UserError(
            f"sweep {sw.id}: job(s) {', '.join(map(str, failed))} did not succeed; "
            f"see 'mlxd jobs logs ID'"
        )


@sweep.command()
@click.argument("sweep_id", type=int)
@output_options()
@catalog_errors
def show(sweep_id, fmt):
    """A sweep as a table by bits per weight: quality, accuracy, speed, memory."""
    _print_table(sweep_id, fmt=fmt)


SWEEP_FIELDS = ("id", "base", "variants", "params", "created_at")  # a listed sweep (CSV header)


@sweep.command("list")
@output_options()
@catalog_errors
def list_(fmt):
    """List sweeps, oldest first."""
    from mlxd.catalog.read import Reader

    rows = []
    with Reader(get_paths()) as reader:
        for sw in reader.sweeps():
            base = reader.model_by_id(sw.base_model_id)
            variants = [v["variant"] for v in sw.variants if v["variant"] != "base"]
            values = (sw.id, base.name if base else None, variants, sw.params, sw.created_at)
            rows.append(dict(zip(SWEEP_FIELDS, values, strict=True)))
    emit(
        fmt,
        rows,
        fields=SWEEP_FIELDS,
        headers=["ID", "BASE", "VARIANTS", "BENCH", "CREATED"],
        table=lambda r: (
            r["id"],
            r["base"],
            ", ".join(r["variants"]),
            f"p={r['params'].get('prompt_tokens')} g={r['params'].get('gen_tokens')} "
            f"n={r['params'].get('trials')}",
            when(r["created_at"]),
        ),
        empty="No sweeps. Queue one with 'mlxd sweep REF --bits 4,8'.",
    )


HEADERS = [
    "Precision",
    "Method",
    "Perplexity",
    "KL",
    "Accuracy",
    "Prompt (tok/s)",
    "Generation (tok/s)",
    "Peak memory",
    "Size",
    "Bits per weight",
]


BENCH_FIELDS = ("prompt_tps", "generation_tps", "peak_memory_gb")
QUALITY_FIELDS = ("perplexity", "kl_mean")
EVAL_FIELDS = ("accuracy",)


def _machine_row(row) -> dict:
    """A row for --json/--csv: numbers or null, and each unfinished job's state apart."""
    import dataclasses

    d = dataclasses.asdict(row)
    for status_key, fields in (
        ("bench_status", BENCH_FIELDS),
        ("quality_status", QUALITY_FIELDS),
        ("eval_status", EVAL_FIELDS),
    ):
        states = [d[f] for f in fields if isinstance(d[f], str)]
        d[status_key] = (
            states[0] if states else ("done" if any(d[f] is not None for f in fields) else None)
        )
        for f in fields:
            if isinstance(d[f], str):
                d[f] = None
    return d


def _print_table(sweep_id: int, *, fmt: str) -> None:
    from mlxd.catalog.read import Reader
    from mlxd.reports.sweeps import sweep_rows

    with Reader(get_paths()) as reader:
        sw = reader.sweep(sweep_id)
        rows = sweep_rows(reader, sw)
    if fmt == "json":
        echo_json({"id": sw.id, "params": sw.params, "rows": [_machine_row(r) for r in rows]})
        return
    if fmt in ("csv", "jsonl"):
        emit(fmt, [_machine_row(r) for r in rows])
        return
    p = sw.params
    table = [
        (
            r.precision,
            r.method or "",
            _num(r.perplexity, 3),
            "-" if r.variant == "base" else _num(r.kl_mean, 3, sig=True),
            _accuracy(r),
            _num(r.prompt_tps, 1),
            _num(r.generation_tps, 1),
            _gb(r.peak_memory_gb),  # a readable unit per row: a tiny model is not 0.000 GB
            _gb(r.size_gb),
            _num(r.bits_per_weight, 2),
        )
        for r in rows
    ]
    if fmt == "text":
        click.echo(
            f"Sweep {sw.id}: bench p={p.get('prompt_tokens')} g={p.get('gen_tokens')} "
            f"n={p.get('trials')}; quality "
            f"{'max ' + str(p['max_tokens']) + ' tokens' if p.get('max_tokens') else 'default text'}"
        )  # noqa: E501
    headers = HEADERS
    if not any(r.eval_job for r in rows):  # no --eval: no accuracy column
        at = HEADERS.index("Accuracy")
        headers = HEADERS[:at] + HEADERS[at + 1 :]
        table = [row[:at] + row[at + 1 :] for row in table]
    click.echo(render_table(headers, table, markdown=fmt == "md"))
    if fmt == "text" and any(r.synthetic for r in rows) and any(r.eval_job for r in rows):
        click.echo("Note: synthetic model (random weights): its accuracy is meaningless.")


def _accuracy(r) -> str:
    if r.eval_job is None:
        return ""
    if not isinstance(r.accuracy, float):
        return _num(r.accuracy, 0)
    drop = f" ({(-r.accuracy_drop or 0.0) * 100:+.1f} pt)" if r.accuracy_drop is not None else ""
    return f"{r.accuracy:.1%}{drop}"


def _gb(v) -> str:
    from mlxd.cli.output import human_bytes

    return human_bytes(int(v * 1e9)) if isinstance(v, float) else _num(v, 0)


def _num(v, digits: int, *, sig: bool = False) -> str:
    if v is None:
        return ""
    if isinstance(v, str):
        return v
    # KL spans orders of magnitude (8-bit ~1e-5, 3-bit ~1e-1): significant digits, not decimals
    return significant(v, digits) if sig else f"{v:.{digits}f}"
