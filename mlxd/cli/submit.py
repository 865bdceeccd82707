"""Submitting jobs and following them: the options every submitting command takes, the
prerequisite check, model references and name checks shared by those commands."""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable
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


def job_options(fn: Callable) -> Callable:
    """Options every job-submitting command takes."""
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
        # Read by submit() from the context: no command has to pass it along.
        click.option(
            "--pool",
            metavar="NAME",
            expose_value=False,
            callback=_remember_pool,
            help="Run it on a daemon of this pool (default: where it fits)",
        ),
    ]
    for opt in reversed(opts):
        fn = opt(fn)
    return fn


def _remember_pool(ctx: click.Context, _param, value: str | None) -> str | None:
    if value is not None:
        from mlxd.daemon.hosts import check_name

        try:
            check_name(value, "pool")
        except ValueError as e:
            raise click.BadParameter(str(e)) from None
        ctx.meta["mlxd.pool"] = value
    return value


def requested_pool() -> str | None:
    """The command's ``--pool`` (None: placement decides)."""
    ctx = click.get_current_context(silent=True)
    return ctx.meta.get("mlxd.pool") if ctx is not None else None


def place_job(
    kind: str, params: dict, store, *, pool: str | None, after: int | None = None
) -> tuple[str, str | None]:
    """(pool, note) for a new job: ``pool`` (``--pool``) if given; else, when several
    machines share the catalog, the host that holds its model (or the pool of the job that
    makes it, ``after``), or a pool with a machine that can hold it. The note says why
    nobody will run it now, when nobody serves the pool it goes to."""
    from mlxd.daemon import admission, hosts, settings

    machines = store.machines()
    lease = settings.lease_timeout_s()
    if pool is None and len(machines) > 1:  # one machine runs everything
        model, model_host = _model_host(params, store)
        if model_host is None and model is None and after is not None:
            made_in = store.get_job(after).pool  # made by AFTER: where that job runs
            model_host = made_in[1:] if made_in.startswith("@") else None
        if model_host is not None:
            target = hosts.host_pool(model_host)
            why = hosts.unserved(target, machines, lease)
            where = f"model '{model.name}' is only on host {model_host}" if model else None
            note = "; ".join(x for x in (where, why, why and hosts.serve_advice(target)) if x)
            return target, (note if why else None)
    est = admission.estimate(kind, params, store) if machines else None
    try:
        return hosts.place(machines, lease, est.memory_bytes if est else None, pool)
    except ValueError as e:
        raise UserError(str(e)) from None


HUB_KINDS = ("download", "push")  # the jobs that talk to the hub with the daemon's settings


def hub_environment_note(kind: str, pool: str, store) -> str | None:
    """For a pull or push: whether the daemon that serves ``pool`` sees another HF_ENDPOINT,
    token presence or offline mode than this command (its machine row says what it has)."""
    if kind not in HUB_KINDS:
        return None
    from mlxd.daemon import hosts, settings
    from mlxd.hub.environment import environment_drift

    live = hosts.live_machines(store.machines(), settings.lease_timeout_s())
    for m in live:
        if pool in (*(m.pools or []), hosts.host_pool(m.host_id)):
            note = environment_drift((m.facts or {}).get("hub"), m.host_id)
            if note:
                return note
    return None


def _model_host(params: dict, store) -> tuple[Any, str | None]:
    """(the model the job reads, the host holding it if only that host has it). A model
    pulled from the hub is not tied to its host: the job's host fetches it first."""
    ref = params.get("model_id") or params.get("model")
    model = store.find_model(ref) if ref is not None else None
    if model is None or getattr(model, "source", None) == "hub":
        return model, None
    return model, getattr(model, "host", None)


def check_room(jobs: int) -> None:
    """The per-user queue limit (MLXD_QUEUE_LIMIT_PER_USER) for a command about to queue
    ``jobs`` jobs: all of them fit, or it is refused before any is queued."""
    from mlxd.daemon.admission import AdmissionError, check_queue_limit

    try:
        check_queue_limit(get_store(), jobs)
    except AdmissionError as e:
        raise UserError(str(e)) from None


def check_fits(jobs) -> None:
    """Admission (memory, disk) for each ``(kind, params)`` of a command's jobs before any
    is queued: a graph is refused whole, not half queued."""
    from mlxd.daemon.admission import AdmissionError, check_at_submit

    try:
        for kind, params in jobs:
            check_at_submit(kind, params, get_store())
    except AdmissionError as e:
        raise UserError(str(e)) from None


def queue_job(
    kind: str,
    params: dict,
    *,
    pool: str | None,
    after: int | None,
    priority: int,
    timeout_s: float | None,
    max_attempts: int = 3,
    room_checked: bool = False,
) -> tuple[int, list[str]]:
    """The one way into the queue, for every submitting path (a single submit, a sweep, a
    fine-tune grid and its fuses, the pull a hub id queues first): the per-user limit
    (unless the command checked room for all its jobs with ``check_room``), admission
    (memory and disk), placement (``pool``, the model's host, memory), the catalog row,
    the queue. Returns the job id and the notes for the user (without a trailing '.')."""
    from mlxd.daemon.admission import AdmissionError, check_at_submit

    if timeout_s is not None and not math.isfinite(timeout_s):
        raise BadUsage("--timeout must be a number of seconds")
    store = get_store()
    if not room_checked:
        check_room(1)
    try:
        disk_note = check_at_submit(kind, params, store)
    except AdmissionError as e:
        raise UserError(str(e)) from None
    pool, pool_note = place_job(kind, params, store, pool=pool, after=after)
    hub_note = hub_environment_note(kind, pool, store)
    job = store.submit_job(
        kind,
        params,
        priority=priority,
        after_job_id=after,
        timeout_s=timeout_s,
        max_attempts=max_attempts,
        pool=pool,
    )
    # The catalog row is the job: if the queue cannot be written now, a running daemon finds
    # the row within seconds (and a starting one at once), so this is a note, not an error.
    queue_note = None
    try:
        release_if_runnable(job.id)
    except Exception as e:  # noqa: BLE001
        queue_note = (
            f"the queue could not be written ({type(e).__name__}); "
            "the daemon picks the job up from the catalog within seconds"
        )
    return job.id, [n for n in (queue_note, disk_note, pool_note, hub_note) if n]


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
    quiet: bool = False,
    max_attempts: int = 3,
    label: str = "",
    pool: str | None = None,
) -> int:
    """Queue one job (``queue_job``) for a command, say so, and maybe follow it.

    ``spec`` is a kind's Spec, or the params dict of an earlier job (retry); ``pool`` is
    the command's ``--pool`` unless given.
    """
    if timeout_s is not None and not math.isfinite(timeout_s):
        raise BadUsage("--timeout must be a number of seconds")
    running = daemon_running(wait=wait, what="the job")
    check_prerequisite(after)
    params = spec if isinstance(spec, dict) else spec.to_params()
    desc = label or describe(kind, spec)  # before the row exists: an error here leaves no job
    job_id, notes = queue_job(
        kind,
        params,
        pool=pool or requested_pool(),
        after=after,
        priority=priority,
        timeout_s=timeout_s,
        max_attempts=max_attempts,
    )
    if not quiet:
        click.echo(f"Queued job {job_id}: {desc}" + (f" (after job {after})" if after else ""))
        echo_notes(notes)
        if not running:
            note_no_daemon("the job starts")
    if wait:
        follow(job_id)
    return job_id


def daemon_running(*, wait: bool, what: str) -> bool:
    """Whether a daemon runs; with ``--wait`` there must be one (nobody would run the job)."""
    from mlxd.catalog import backend
    from mlxd.daemon.control import status

    paths = get_paths()
    running = status(paths).running
    if not running and backend.database(paths).is_postgres:
        # A shared catalog: a daemon on any machine runs the job (a laptop submits to them).
        from mlxd.daemon import hosts, settings

        running = bool(hosts.live_machines(get_store().machines(), settings.lease_timeout_s()))
    if wait and not running:
        raise UserError(
            "the daemon is not running; start it with 'mlxd daemon start' "
            f"(or leave out --wait to queue {what} for later)"
        )
    return running


def note_no_daemon(what: str) -> None:
    click.echo(f"Note: the daemon is not running; {what} with 'mlxd daemon start'.", err=True)


def check_prerequisite(after: int | None) -> None:
    """A job may wait on one that is queued, running or done well; not on one that failed."""
    if after is None:
        return
    pre = get_store().get_job(after)
    if pre.status in ("failed", "cancelled"):
        raise BadUsage(
            f"job {after} is {pre.status}; retry it first ('mlxd jobs retry {after}') "
            "and wait on the new job"
        )


def describe(kind: str, spec) -> str:
    from mlxd.jobs import load_kind

    return load_kind(kind).describe(spec)


def release_if_runnable(job_id: int) -> None:
    """Enqueue a job unless it waits on an unfinished prerequisite (then the daemon will)."""
    from mlxd.daemon.queue import enqueue

    store = get_store()
    job = store.get_job(job_id)
    if store.prerequisite_gate(job) == "go":
        enqueue(get_paths(), job.id, priority=job.priority, pool=job.pool)


def follow(job_id: int, **kwargs) -> Any:
    """Show a job's progress until it ends; UserError (exit 1) if it did not succeed.
    Ctrl-C ends the wait, not the job (exit 130, saying how to follow it again)."""
    try:
        return _follow(job_id, **kwargs)
    except KeyboardInterrupt:
        raise WaitInterrupted(
            f"interrupted; job {job_id} goes on in the daemon: follow it with "
            f"'mlxd jobs wait {job_id}' or 'mlxd jobs logs {job_id} --follow'"
        ) from None


def _follow(
    job_id: int,
    *,
    timeout_s: float | None = None,
    deadline: float | None = None,
    show_progress: bool = True,
) -> Any:
    """Show a job's progress until it ends; UserError (exit 1) if it did not succeed."""
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    reader = get_reader()
    job = reader.job(job_id)
    if deadline is None and timeout_s:
        deadline = time.monotonic() + timeout_s  # several waits may share one deadline
    desc = f"job {job.id} {job.kind}"
    progress = Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        TextColumn("{task.percentage:>3.0f}%"),
        TimeElapsedColumn(),
        TextColumn("{task.fields[message]}"),
        disable=not show_progress or not sys.stderr.isatty(),
        console=Console(stderr=True),
        transient=True,
    )
    stalled = 0  # consecutive checks that found nobody to run the job
    last_check = time.monotonic()
    with progress:
        task = progress.add_task(desc, total=1.0, message=job.status)
        while job.status in ("queued", "running"):
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
            if v is not None
        )
        click.echo(f"Job {job.id} succeeded" + (f": {summary}" if summary else ""))
    return job


NO_DAEMON = "no daemon is running it; start one with 'mlxd daemon start'"


def _nobody_runs(job) -> str | None:
    """Why nobody will run ``job`` (queued or running), or None while someone may."""
    from mlxd.catalog import backend
    from mlxd.daemon import hosts, settings
    from mlxd.daemon.liveness import owner_alive

    if job.status not in ("queued", "running"):
        return None
    if job.status == "queued":
        if not daemon_running(wait=False, what=""):
            return NO_DAEMON
        # Daemons run, but maybe none of them serves the job's pool.
        why = hosts.unserved(job.pool, machines_as_seen(), settings.lease_timeout_s())
        return f"{why}; {hosts.serve_advice(job.pool)}" if why else None
    if backend.database(get_paths()).is_postgres and job.host not in (None, hosts.host_id()):
        # A shared catalog: another machine's job, judged by its heartbeats.
        from mlxd.daemon.runner import HEARTBEAT_S

        machines = {m.host_id: m for m in get_store().machines()}
        dead = hosts.job_host_dead(job, machines, settings.lease_timeout_s(), HEARTBEAT_S)
        return NO_DAEMON if dead else None
    return None if owner_alive(job) else NO_DAEMON


def why_waiting(jobs) -> dict[int, str]:
    """For each queued job of ``jobs``: why it has not started (``hosts.wait_reason``),
    computed from the catalog by the reader, the same words on every machine."""
    queued = [j for j in jobs if j.status == "queued"]
    if not queued:
        return {}
    from mlxd.daemon import hosts, settings

    reader = get_reader()
    machines, pending = machines_as_seen(), reader.jobs(["queued", "running"])
    lease = settings.lease_timeout_s()
    return {j.id: hosts.wait_reason(j, machines, lease, pending) for j in queued}


def machines_as_seen() -> list:
    """The catalog's machine rows; on one machine (SQLite) the daemon's lock is the truth,
    whatever its last heartbeat says (a killed daemon leaves a fresh one)."""
    from mlxd.catalog import backend
    from mlxd.daemon import hosts
    from mlxd.daemon.control import status

    p = get_paths()
    local = None if backend.database(p).is_postgres else status(p).running
    return hosts.seen_machines(get_reader().machines(), local_daemon=local)


def foreground_runner(on_progress: Callable[[float, str], None] | None = None):
    """A Runner for a job this command runs itself (no daemon), releasing its dependents;
    ``on_progress`` hears the child's progress (fraction, message)."""
    from mlxd.daemon.runner import Runner

    store, p = get_store(), get_paths()
    return Runner(store, p, release=lambda j: _release(p, store, j), on_progress=on_progress)


def _release(p, store, job_id: int) -> None:
    from mlxd.daemon.queue import enqueue

    job = store.get_job(job_id)
    enqueue(p, job.id, priority=job.priority, pool=job.pool)


def short_value(value: Any, digits: int = 3) -> str:
    """A result value in a summary line: numbers never in exponent form."""
    if isinstance(value, float):
        from mlxd.reports.fmt import sig

        return sig(value, digits)
    if isinstance(value, list):
        return ", ".join(short_value(v, digits) for v in value)
    return str(value)


def model_or_later(ref: str, after: int | None):
    """REF's catalog model, or None when it does not exist yet and is allowed to: it is made
    by the job named with --after (a note says so); otherwise NotFound."""
    from mlxd.catalog.store import NotFound

    try:
        return get_store().resolve_model(ref)
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
    if get_store().find_model(name) is not None:
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
    from mlxd.jobs.choices import is_quantized, quant_label

    if model is not None and is_quantized(model):
        parent = get_reader().model_by_id(model.parent_id)
        hint = f"; {verb} its unquantized parent '{parent.name}'" if parent else ""
        raise BadUsage(f"model '{model.name}' is already quantized ({quant_label(model)}){hint}")


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
