"""The Click side of submitting jobs: the options every submitting command takes, queueing
through the scheduling room (``mlxd.scheduling``) and saying what it did, following jobs,
and the model references and name checks shared by those commands."""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable
from contextvars import ContextVar
from dataclasses import replace
from typing import Any

import click

from mlxd.cli.context import (
    BadUsage,
    UserError,
    WaitInterrupted,
    WaitTimedOut,
    get_paths,
    get_reader,
    get_store,
)

PRIORITY_LIMIT = 1_000_000

# What the team server hears of a command it runs for a remote user (``cli/bridge.py``): the
# ids each queue() made, and a follow's progress (drawn by the remote CLI, not here).
QUEUED_IDS: ContextVar[list[int] | None] = ContextVar("mlxd_queued_ids", default=None)
PROGRESS_HOOK: ContextVar[Callable[[str, float, str], None] | None] = ContextVar(
    "mlxd_progress_hook", default=None
)


def job_options(fn: Callable) -> Callable:
    """Options every job-submitting command takes (the command passes them on to
    :func:`submit`: ``wait``, ``after``, ``priority``, ``timeout_s``, ``pool``)."""
    opts = [
        click.option(
            "--wait", is_flag=True, help="Follow the job with a progress bar; exit 1 if it fails"
        ),
        click.option(
            "--after",
            "after",
            type=click.IntRange(min=1),
            metavar="ID",
            help="Start only after job ID succeeded",
        ),
        click.option(
            "--priority",
            type=click.IntRange(-PRIORITY_LIMIT, PRIORITY_LIMIT),
            default=0,
            show_default=True,
            help="Higher runs first",
        ),
        click.option(
            "--timeout",
            "timeout_s",
            type=click.FloatRange(min=0, min_open=True, max=1e9),
            metavar="SECONDS",
            help="Fail the job if it runs longer",
        ),
        click.option(
            "--pool",
            metavar="NAME",
            callback=_check_pool,
            help="Run it on a daemon of this pool (default: where it fits)",
        ),
    ]
    for opt in reversed(opts):
        fn = opt(fn)
    return fn


def _check_pool(_ctx, _param, value: str | None) -> str | None:
    if value is not None:
        from mlxd.scheduling.placement import check_name

        try:
            check_name(value, "pool")
        except ValueError as e:
            raise click.BadParameter(str(e)) from None
    return value


def check_timeout(timeout_s: float | None) -> None:
    if timeout_s is not None and not math.isfinite(timeout_s):
        raise BadUsage("--timeout must be a number of seconds")


def queue(plan, *, pool: str | None):
    """Queue ``plan`` (a list of ``mlxd.scheduling.Node``) through the scheduling room, its
    refusals as the CLI says them; the ``Queued``."""
    from mlxd.cli.context import refused
    from mlxd.scheduling import SchedulingError, submit_graph

    try:
        queued = submit_graph(plan, pool=pool, paths=get_paths(), reader=get_reader())
    except SchedulingError as e:
        raise refused(e) from None
    heard = QUEUED_IDS.get()
    if heard is not None:
        heard.extend(queued.job_ids)
    return queued


def echo_notes(notes) -> None:
    """Each note once, on stderr."""
    for note in dict.fromkeys(notes):
        click.echo(f"Note: {note}.", err=True)


def submit(
    kind: str,
    spec,
    *,
    wait: bool = False,
    after: int | None = None,
    priority: int = 0,
    timeout_s: float | None = None,
    pool: str | None = None,
    quiet: bool = False,
    max_attempts: int = 3,
    label: str = "",
    pull=None,
) -> int:
    """Queue one job for a command, say so, and maybe follow it; its id.

    ``spec`` is a kind's Spec, or the params dict of an earlier job (retry, with its
    ``label``); ``pull`` a download Spec queued first when the job reads a hub id not
    pulled yet: both, or neither.
    """
    from mlxd.scheduling import Node

    node = Node(kind, spec, after, None, priority, timeout_s, max_attempts)
    plan = [node] if pull is None else [pull_node(pull, after, priority), with_pull(node, 0)]
    labels = [label or None] if pull is None else [None, label or None]
    job_id = submit_plan(plan, pool=pool, wait=wait, quiet=quiet, labels=labels)[-1]
    if wait:
        follow(job_id)
    return job_id


def pull_node(pull, after: int | None, priority: int):
    """The node of a pull queued before the job that reads its hub id."""
    from mlxd.scheduling import Node

    return Node("download", pull, after=after, priority=priority)


def with_pull(node, index: int):
    """``node`` waiting on the pull at ``index`` of its plan instead of its ``after``."""
    return replace(node, after=None, after_node=index)


def submit_plan(
    plan, *, pool: str | None, wait: bool = False, quiet: bool = False, labels=(), what="the job"
) -> list[int]:
    """Queue ``plan`` (``mlxd.scheduling.Node`` list) whole, with a line per job; the ids.
    ``labels``: what to call each job (default: its kind's description)."""
    for node in plan:
        check_timeout(node.timeout_s)
    running = daemon_running(wait=wait, what=what)
    # Described before the rows exist: an error here leaves no job.
    descs = [
        (labels[i] if i < len(labels) else None) or describe(n.kind, n.params)
        for i, n in enumerate(plan)
    ]
    queued = queue(plan, pool=pool)
    if not quiet:
        for node, job_id, desc in zip(plan, queued.job_ids, descs, strict=True):
            after = queued.job_ids[node.after_node] if node.after_node is not None else node.after
            click.echo(f"Queued job {job_id}: {desc}" + (f" (after job {after})" if after else ""))
        echo_notes(queued.notes)
        if not running:
            note_no_daemon("the jobs start" if len(plan) > 1 else "the job starts")
    return queued.job_ids


def daemon_running(*, wait: bool, what: str) -> bool:
    """Whether a daemon runs; with ``--wait`` there must be one (nobody would run the job)."""
    from mlxd.catalog import backend
    from mlxd.daemon.control import status

    paths = get_paths()
    running = status(paths).running
    if not running and backend.database(paths).is_postgres:
        # A shared catalog: a daemon on any machine runs the job (a laptop submits to them).
        from mlxd.scheduling.placement import live_machines
        from mlxd.vocab import settings

        running = bool(live_machines(get_reader().machines(), settings.LEASE_TIMEOUT_S.get()))
    if wait and not running:
        raise UserError(
            "the daemon is not running; start it with 'mlxd daemon start' "
            f"(or leave out --wait to queue {what} for later)"
        )
    return running


def note_no_daemon(what: str) -> None:
    click.echo(f"Note: the daemon is not running; {what} with 'mlxd daemon start'.", err=True)


def describe(kind: str, spec) -> str:
    from mlxd.jobs import load_kind

    return load_kind(kind).describe(spec)


def follow(job_id: int, **kwargs) -> Any:
    """Show a job's progress until it ends; UserError (exit 1) if it did not succeed.
    Ctrl-C ends the wait, not the job (exit 130, saying how to follow it again)."""
    try:
        return _follow(job_id, **kwargs)
    except KeyboardInterrupt:
        raise WaitInterrupted(interrupted(job_id)) from None


def interrupted(job_id: int) -> str:
    """What a Ctrl-C during a wait says (here, and in the remote CLI)."""
    return (
        f"interrupted; job {job_id} goes on in the daemon: follow it with "
        f"'mlxd jobs wait {job_id}' or 'mlxd jobs logs {job_id} --follow'"
    )


def _follow(
    job_id: int,
    *,
    timeout_s: float | None = None,
    deadline: float | None = None,
    show_progress: bool = True,
) -> Any:
    """Show a job's progress until it ends; UserError (exit 1) if it did not succeed."""
    reader = get_reader()
    job = reader.job(job_id)
    if deadline is None and timeout_s:
        deadline = time.monotonic() + timeout_s  # several waits may share one deadline
    desc = f"job {job.id} {job.kind}"
    progress = progress_bar(show_progress and sys.stderr.isatty())
    stalled = 0  # consecutive checks that found nobody to run the job
    last_check = time.monotonic()
    hook = PROGRESS_HOOK.get() if show_progress else None
    with progress:
        task = progress.add_task(desc, total=1.0, message=job.status)
        while job.status in ("queued", "running"):
            if hook is not None:
                hook(desc, job.progress, job.message or job.status)
            if deadline and time.monotonic() > deadline:
                raise WaitTimedOut(
                    f"job {job_id} still {job.status} after {short_value(timeout_s, 6)} s"
                )
            time.sleep(0.2)
            job = reader.job(job_id)
            progress.update(task, completed=job.progress, message=job.message or job.status)
            if time.monotonic() - last_check >= 1.0:
                last_check = time.monotonic()
                why = _nobody_runs(job)
                stalled = stalled + 1 if why else 0
                if stalled >= 3:  # a few seconds' grace: a daemon may be restarting
                    raise UserError(f"job {job_id} is {job.status} but {why}")
    if job.status != "succeeded":
        raise UserError(f"job {job.id} {job.status}: {job.error or 'no reason recorded'}")
    if show_progress:
        summary = ", ".join(
            f"{k.replace('_', ' ')} {short_value(v)}"
            for k, v in (job.result or {}).items()
            if v is not None and not isinstance(v, dict)  # a table's worth: `jobs show`
        )
        click.echo(f"Job {job.id} succeeded" + (f": {summary}" if summary else ""))
    return job


def progress_bar(enabled: bool):
    """The bar a --wait draws on stderr (the remote CLI draws the same from the server's
    progress events)."""
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        TextColumn("{task.percentage:>3.0f}%"),
        TimeElapsedColumn(),
        TextColumn("{task.fields[message]}"),
        disable=not enabled,
        console=Console(stderr=True),
        transient=True,
    )


NO_DAEMON = "no daemon is running it; start one with 'mlxd daemon start'"


def _nobody_runs(job) -> str | None:
    """Why nobody will run ``job`` (queued or running), or None while someone may."""
    from mlxd.catalog import backend
    from mlxd.daemon import hosts
    from mlxd.daemon.liveness import owner_alive
    from mlxd.scheduling.placement import serve_advice, unserved
    from mlxd.vocab import settings

    if job.status not in ("queued", "running"):
        return None
    if job.status == "queued":
        if not daemon_running(wait=False, what=""):
            return NO_DAEMON
        # Daemons run, but maybe none of them serves the job's pool.
        why = unserved(job.pool, machines_as_seen(), settings.LEASE_TIMEOUT_S.get())
        return f"{why}; {serve_advice(job.pool)}" if why else None
    if backend.database(get_paths()).is_postgres and job.host not in (None, hosts.host_id()):
        # A shared catalog: another machine's job, judged by its heartbeats.
        from mlxd.daemon.runner import HEARTBEAT_S

        machines = {m.host_id: m for m in get_store().machines()}
        dead = hosts.job_host_dead(job, machines, settings.LEASE_TIMEOUT_S.get(), HEARTBEAT_S)
        return NO_DAEMON if dead else None
    return None if owner_alive(job) else NO_DAEMON


def why_waiting(jobs) -> dict[int, str]:
    """For each queued job of ``jobs``: why it has not started (``hosts.wait_reasons``)."""
    from mlxd.daemon import hosts

    return hosts.wait_reasons(get_paths(), get_reader(), jobs)


def machines_as_seen() -> list:
    """The catalog's machine rows as the wait reasons judge them (``hosts.machines_as_seen``)."""
    from mlxd.daemon import hosts

    return hosts.machines_as_seen(get_paths(), get_reader())


def foreground_runner(on_progress: Callable[[float, str], None] | None = None):
    """A Runner for a job this command runs itself (no daemon), releasing its dependents;
    ``on_progress`` hears the child's progress (fraction, message)."""
    from mlxd.daemon.runner import Runner

    store, p = get_store(), get_paths()
    return Runner(store, p, release=lambda j: _release(p, store, j), on_progress=on_progress)


def _release(p, store, job_id: int) -> None:
    from mlxd.scheduling.queue import enqueue

    job = store.get_job(job_id)
    enqueue(p, job.id, priority=job.priority, pool=job.pool)


def short_value(value: Any, digits: int = 3) -> str:
    """A result value in a summary line: numbers never in exponent form."""
    if isinstance(value, float):
        from mlxd.vocab.fmt import sig

        return sig(value, digits)
    if isinstance(value, list):
        return ", ".join(short_value(v, digits) for v in value)
    return str(value)


def model_or_later(ref: str, after: int | None):
    """REF's catalog model, or None when it does not exist yet and is allowed to: it is made
    by the job named with --after (a note says so); otherwise NotFound."""
    from mlxd.catalog.errors import NotFound

    try:
        return get_reader().model(ref)
    except NotFound:
        if after is None:
            raise
        click.echo(
            f"Note: model '{ref}' does not exist yet; it is looked up when job "
            f"{after} has finished.",
            err=True,
        )
        return None


def model_ref(ref: str, after: int | None) -> tuple[str, int | None]:
    """(REF, its catalog id); a REF not found yet is allowed only after another job."""
    model = model_or_later(ref, after)
    # The catalog name from here on: `quantize 3` makes tiny-4bit-g64, not 3-4bit-g64.
    return (model.name, model.id) if model else (ref, None)


def check_free_name(name: str) -> None:
    """A new model's name must be free in the catalog and not claimed by a queued job."""
    if get_reader().find_model(name) is not None:
        raise BadUsage(
            f"a model named '{name}' already exists; pass --name or remove it with "
            f"'mlxd models rm {name}'"
        )
    for job in get_reader().jobs(("queued", "running")):
        if job.params.get("name") == name and job.kind != "bench":
            raise BadUsage(
                f"job {job.id} ({job.kind}, {job.status}) will make a model named '{name}'; "
                "pass --name"
            )


def catalog_model(model_id: int | None):
    """The catalog row of a model REF resolved at submit (None when it does not exist yet)."""
    return None if model_id is None else get_reader().model_by_id(model_id)


def check_not_quantized(model, verb: str) -> None:
    """Quantized weights cannot be quantized or converted again: say where to start instead."""
    from mlxd.vocab.choices import is_quantized, model_quant_label

    if model is not None and is_quantized(model):
        parent = get_reader().model_by_id(model.parent_id)
        hint = f"; {verb} its unquantized parent '{parent.name}'" if parent else ""
        raise BadUsage(
            f"model '{model.name}' is already quantized ({model_quant_label(model)}){hint}"
        )


def check_context(model, needed: int, what: str) -> None:
    """Refuse lengths past the model's context (its position embeddings) at submit."""
    from mlxd.formats.modelfolder import context_length, read_config

    if model is None:
        return
    limit = context_length(read_config(model.path))
    if limit is not None and needed > limit:
        raise BadUsage(
            f"{what} is {needed:,} tokens; model '{model.name}' has a context of {limit:,}"
        )


def usable_adapter(ref: str | None, model_id: int | None) -> tuple[str | None, int | None]:
    """(ADAPTER, its catalog id) checked against the model at submit: refused (naming both)
    unless it was trained on that model. A model an earlier job still makes is checked by
    the job itself."""
    if ref is None:
        return None, None
    store = get_store()
    found = store.resolve_adapter(ref)
    if model_id is not None:
        from mlxd.jobs.finetune_use import adapter_for

        adapter_for(store, found.id, catalog_model(model_id))
    return found.name, found.id
