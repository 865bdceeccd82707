"""mlxd eval: ``mlxd eval REF --task ...`` queues an eval job (same as ``eval run REF``);
``eval list`` shows every stored eval run, ``eval show ID [--items]`` one with its tasks and,
with ``--items``, every item's answer."""

from __future__ import annotations

import click

from mlxd.cli.context import BadUsage, catalog_errors, get_reader
from mlxd.cli.groups import DefaultGroup
from mlxd.cli.output import echo_json, emit, empty_text, output_options, render_table, when
from mlxd.cli.params import list_option
from mlxd.cli.submit import catalog_model, job_options, model_ref, submit

SYNTHETIC_MARK = " (synthetic: meaningless)"


@click.group(cls=DefaultGroup)
def eval_():
    """Task accuracy: multiple-choice and generation tasks, offline.

    \b
    mlxd eval REF --task builtin [--base REF]   queue an eval job (same as 'eval run REF ...')
    mlxd eval list                              every stored eval run
    mlxd eval show ID [--items]                 one run: its tasks, and every item's answer
    """


@eval_.command("run")
@click.argument("ref")
@list_option(
    "--task",
    "tasks",
    metavar="FILE|NAME",
    default=("builtin",),
    show_default=True,
    help="A JSONL task file, a builtin task's name, or 'builtin' for all (comma list or repeated)",
)
@click.option("--base", metavar="REF", help="Also score this model; report the accuracy lost")
@click.option(
    "--limit", type=click.IntRange(min=1), metavar="N", help="At most N items per task (seeded)"
)
@click.option(
    "--shots", type=click.IntRange(min=0), default=0, show_default=True, help="Few-shot examples"
)
@click.option(
    "--seed", type=int, default=0, show_default=True, help="Seed of the items and shots drawn"
)
@job_options
@catalog_errors
def run(ref, tasks, base, limit, shots, seed, wait, after, priority, timeout_s, pool):
    """Queue an eval job: accuracy per task, with a bootstrap 95% interval."""
    from mlxd.jobs.base import check_same_tokenizer
    from mlxd.jobs.eval import Spec

    ref, model_id = model_ref(ref, after)
    base_id = None
    if base is not None:
        base, base_id = model_ref(base, after)
        if base == ref:
            raise BadUsage(f"--base {base} is the model itself; compare it with another model")
        model, base_model = catalog_model(model_id), catalog_model(base_id)
        if model is not None and base_model is not None:
            check_same_tokenizer(model, base_model, "eval compares variants of one model")
    spec = Spec(
        model=ref,
        model_id=model_id,
        tasks=list(tasks),
        base=base,
        base_id=base_id,
        limit=limit,
        shots=shots,
        seed=seed,
    )
    job_id = submit(
        "eval", spec, wait=wait, after=after, priority=priority, timeout_s=timeout_s, pool=pool
    )
    if wait:
        runs = [r for r in get_reader().eval_runs_of_job(job_id) if r.model_id == model_id]
        if runs:
            _echo_run(runs[-1])


def _acc(value, low=None, high=None) -> str:
    if value is None:
        return ""
    ci = f" [{low:.1%}, {high:.1%}]" if low is not None and high is not None else ""
    return f"{value:.1%}{ci}"


def _drop(value) -> str:
    return "" if value is None else f"{(value or 0.0) * 100:.1f} pt"


@eval_.command("list")
@list_option("--model", "models", metavar="REF", help="Only these models (comma list or repeated)")
@output_options()
@catalog_errors
def list_(models, fmt):
    """Every eval run: accuracy with its 95% interval, and the drop against its base."""
    reader = get_reader()
    ids = [reader.model(ref).id for ref in models]
    rows = reader.eval_rows(ids or None)
    emit(
        fmt,
        rows,
        headers=[
            "RUN",
            "JOB",
            "MODEL",
            "QUANT",
            "TASKS",
            "ITEMS",
            "ACCURACY",
            "BASE",
            "DROP",
            "WHEN",
        ],
        table=lambda r: (
            r["id"],
            r["job_id"] or "",
            r["model"] + (SYNTHETIC_MARK if r["synthetic"] else ""),
            r["quantization"] or "",
            ", ".join(r["tasks"]),
            r["items"],
            _acc(r["accuracy"], r["accuracy_low"], r["accuracy_high"]),
            r["base"] or "",
            _drop(r["accuracy_drop"]),
            when(r["created_at"]),
        ),
        empty=empty_text(
            "eval runs",
            [models and "of model " + " or ".join(f"'{m}'" for m in models)],
            "No eval runs yet. Queue one with 'mlxd eval REF --task builtin'.",
        ),
    )


@eval_.command("show")
@click.argument("run_id", type=int)
@click.option(
    "--items", "with_items", is_flag=True, help="Also every item: its answer, right or not"
)
@click.option("--wrong", is_flag=True, help="With --items: only the items it got wrong")
@output_options("show")
@catalog_errors
def show(run_id, with_items, wrong, fmt):
    """One eval run: accuracy per task with 95% intervals; every item with --items."""
    reader = get_reader()
    r = reader.eval_run(run_id)
    items = reader.eval_items(run_id) if with_items or fmt == "json" else []
    if wrong:
        items = [i for i in items if not i["correct"]]
    if fmt == "json":
        echo_json({**r, "items": items} if with_items else dict(r))
        return
    _echo_run(r)
    if with_items:
        click.echo()
        table = [
            (
                i["task"],
                i["item"],
                i["line"] or "",
                "yes" if i["correct"] else "no",
                _one_line(i["output"]),
                _one_line(i["expected"]),
            )
            for i in items
        ]
        click.echo(render_table(["TASK", "ITEM", "LINE", "RIGHT", "ANSWERED", "EXPECTED"], table))


def _one_line(text: str, width: int = 60) -> str:
    flat = " ".join((text or "").split())
    return flat if len(flat) <= width else flat[: width - 1] + "…"


def _echo_run(r) -> None:
    base = ""
    if r["base_accuracy"] is not None:
        base = (
            f"; base {r['base'] or '?'} {r['base_accuracy']:.1%}, "
            f"drop {r['accuracy_drop'] * 100:.1f} pt"
        )
    click.echo(
        f"Eval run {r['id']} of {r['model']} ({r['quantization'] or '?'}): "
        f"{_acc(r['accuracy'], r['accuracy_low'], r['accuracy_high'])} of {r['items']} items"
        f"{base}; {r['shots']}-shot, seed {r['seed']}"
        + (f", {r['item_limit']} per task" if r["item_limit"] else "")
    )
    if r["synthetic"]:
        click.echo("Note: synthetic model (random weights): its accuracy is meaningless.")
    table = []
    for name, t in (r["details"] or {}).get("tasks", {}).items():
        table.append(
            (
                name,
                t["kind"],
                t["items"],
                _acc(t["acc"], t["acc_low"], t["acc_high"]),
                _acc(t.get("acc_norm"), t.get("acc_norm_low"), t.get("acc_norm_high")),
                "" if t.get("chance") is None else f"{t['chance']:.0%}",
            )
        )
    click.echo(render_table(["TASK", "KIND", "ITEMS", "ACC [95% CI]", "ACC_NORM", "CHANCE"], table))
