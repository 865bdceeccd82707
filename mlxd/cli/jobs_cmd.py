"""mlxd jobs list|show|logs|cancel|retry|wait."""

from __future__ import annotations

import click

from mlxd.cli.context import (
    WAIT_TIMEOUT_EXIT,
    BadUsage,
    UserError,
    WaitTimedOut,
    catalog_errors,
    get_paths,
    get_reader,
    get_store,
)
from mlxd.cli.output import echo_facts, echo_json, emit, empty_text, output_options, when
from mlxd.cli.params import list_option
from mlxd.cli.submit import follow, short_value, submit, why_waiting
from mlxd.jobs import KINDS

STATUSES = ["queued", "running", "succeeded", "failed", "cancelled"]


@click.group()
def jobs():
    """Inspect and control queued and finished jobs."""


def _describe(job) -> str:
    from mlxd.jobs import UnknownJobKind, load_kind

    try:
        kind = load_kind(job.kind)
        return kind.describe(kind.Spec.from_params(job.params))
    except (UnknownJobKind, TypeError, ValueError):
        return job.kind


@jobs.command("list")
@list_option(
    "--status",
    "statuses",
    choices=STATUSES,
    help="Only jobs with these statuses (comma list or repeated)",
)
@click.option("--kind", type=click.Choice(list(KINDS)), help="Only jobs of this kind")
@click.option(
    "--limit",
    type=click.IntRange(min=0),
    default=50,
    show_default=True,
    help="Newest N jobs (0: all)",
)
@output_options()
def list_(statuses, kind, limit, fmt):
    """List jobs, oldest first."""
    reader = get_reader()
    rows = reader.jobs(statuses or None, kind=kind, limit=limit)
    if limit and len(rows) == limit:
        total = reader.count_jobs(statuses or None, kind=kind)
        if total > limit:
            # On stderr: --json and --csv stay clean, and a script still hears of it.
            click.echo(f"Note: the newest {limit} of {total} jobs (--limit 0: all)", err=True)
    waits = why_waiting(rows)
    columns = getattr(rows, "columns", None)  # a CSV of no rows still names them
    rows = [_with_wait(j, waits) for j in rows]
    emit(
        fmt,
        rows,
        fields=[*columns, "waiting"] if columns is not None else None,
        headers=["ID", "KIND", "STATUS", "PROGRESS", "BY", "SUBMITTED", "WHAT", "NOTE"],
        table=lambda j: (
            j.id,
            j.kind,
            j.status,
            f"{j.progress * 100:.0f}%" if j.status == "running" else "",
            j.submitted_by,
            when(j.submitted_at),
            _describe(j),
            _note(j),
        ),
        empty=empty_text(
            "jobs",
            [
                kind and f"of kind {kind}",
                statuses and f"with status {' or '.join(statuses)}",
            ],
            "No jobs.",
        ),
    )


def _with_wait(j, waits: dict[int, str]):
    """The job's row, with why it waits when it is queued (``waiting`` in --json too)."""
    return type(j)({**j, "waiting": waits.get(j.id)})


def _note(j) -> str:
    if j.error:
        return j.error
    if j.status == "running":
        return j.message or ""
    if j.status == "queued":
        # Never empty: "waiting for job 3", "no daemon serves pool @vm; last seen never",
        # "host b down since 14:02", "waiting: memory (...)", "behind job 12"...
        return j.get("waiting") or j.message or ""
    return ""


@jobs.command()
@click.argument("job_id", type=int)
@output_options("show")
@catalog_errors
def show(job_id: int, fmt: str):
    """Show one job."""
    j = get_reader().job(job_id)
    j = _with_wait(j, why_waiting([j]))
    if fmt == "json":
        echo_json(j)
        return
    echo_facts(
        [
            ("id", j.id),
            ("kind", j.kind),
            ("what", _describe(j)),
            ("status", j.status),
            ("progress", f"{j.progress * 100:.0f}% {j.message or ''}".strip()),
            ("waiting", j.get("waiting")),
            ("pool", j.pool),
            ("error", j.error),
            ("after job", j.after_job_id),
            ("attempts", f"{j.attempts} of {j.max_attempts}"),
            ("crashes", f"{j.crashes} ({j.crash_reason})" if j.crashes else None),
            ("interrupted", f"{j.interruptions} daemon stop(s)" if j.interruptions else None),
            ("priority", j.priority),
            ("timeout", f"{short_value(float(j.timeout_s), 6)} s" if j.timeout_s else None),
            ("submitted", f"{when(j.submitted_at)} by {j.submitted_by}"),
            ("started", when(j.started_at)),
            ("finished", when(j.finished_at)),
            ("host", j.host),
            ("pid", j.pid),
            ("result", ", ".join(f"{k}={short_value(v, 4)}" for k, v in (j.result or {}).items())),
            ("log", j.log_path),
            ("params", ", ".join(f"{k}={v}" for k, v in j.params.items())),
        ]
    )


@jobs.command()
@click.argument("job_id", type=int)
@click.option("-f", "--follow", is_flag=True, help="Keep printing until the job ends")
@catalog_errors
def logs(job_id: int, follow: bool):
    """Print a job's full log (its child process's output)."""
    import time
    from pathlib import Path

    from mlxd.daemon.hosts import host_id

    me = host_id()
    reader = get_reader()
    j = reader.job(job_id)
    path = Path(j.log_path) if j.log_path else None

    def local_file() -> bool:
        # The log file is in the MLXD_HOME of the host that ran the job; on a shared catalog
        # (PostgreSQL) that daemon also copies it into the catalog, for other machines.
        return j.host in (None, me) and path is not None and path.exists()

    from_file = local_file()
    offset = after = 0
    final_look = False
    if not from_file and not follow and not reader.job_log(job_id):
        where = f" on host {j.host}; its log is there" if j.host not in (None, me) else ""
        raise UserError(f"job {job_id} has no log yet (status: {j.status}){where}")
    while True:
        if from_file or local_file():
            from_file = True
            with open(path, errors="replace") as f:
                f.seek(offset)
                chunk = f.read()
                offset = f.tell()
        else:
            pieces = reader.job_log(job_id, after)
            after = pieces[-1].id if pieces else after
            chunk = "".join(p.text for p in pieces)
        click.echo(chunk, nl=False)
        if not follow:
            return
        if j.status not in ("queued", "running"):
            if from_file or final_look:
                return
            # The running host copies the last lines just after the job ends: one more look.
            final_look = True
            time.sleep(1.5)
            continue
        time.sleep(0.3)
        j = reader.job(job_id)


@jobs.command()
@click.argument("job_ids", type=int, nargs=-1, required=True)
@click.option("--force", is_flag=True, help="Cancel jobs another user submitted")
@click.option(
    "--no-wait",
    is_flag=True,
    help="Return once a running job's stop is asked for; its daemon stops it (seconds)",
)
@catalog_errors
def cancel(job_ids: tuple[int, ...], force: bool, no_wait: bool):
    """Cancel queued jobs, or stop running ones (several ids at once)."""
    _each_job(
        job_ids, lambda job_id: _cancel_one(job_id, force, wait=not no_wait), "were not cancelled"
    )


def _each_job(job_ids, action, failed: str) -> None:
    """``action(id)`` for each job; one failure does not stop the others (one line each), and
    the exit status says whether all went well. A timed-out wait ends everything at once."""
    errors = []
    for job_id in job_ids:
        try:
            action(job_id)
        except WaitTimedOut:
            raise
        except UserError as e:
            if len(job_ids) == 1:
                raise
            click.echo(f"Error: {e.message}", err=True)
            errors.append(job_id)
    if errors:
        raise UserError(f"job(s) {', '.join(map(str, errors))} {failed}")


def _cancel_one(job_id: int, force: bool = False, wait: bool = True) -> None:
    from mlxd.catalog.errors import CatalogError, FencedOut, NotFound
    from mlxd.daemon.control import request_cancel_file
    from mlxd.daemon.liveness import owner_alive
    from mlxd.daemon.retry import transient
    from mlxd.scheduling.admission import current_user
    from mlxd.scheduling.gate import fail_dependents

    store = get_store()
    current = store.get_job(job_id)
    me = current_user()
    if current.submitted_by and me and current.submitted_by != me and not force:
        raise UserError(
            f"job {job_id} was submitted by {current.submitted_by}; "
            "cancel another user's job with --force"
        )
    running = current.status == "running"
    if running:
        # The supervisor sees this file at once, even while the catalog is locked.
        request_cancel_file(get_paths(), job_id)
    try:
        job = store.request_cancel(job_id)
    except NotFound as e:
        raise BadUsage(str(e)) from None
    except CatalogError as e:
        raise UserError(str(e)) from None
    except Exception as e:
        if not transient(e):
            raise
        if not running:
            raise UserError(
                f"the catalog is locked by another process ({e.orig}); try again"
            ) from None
        click.echo(
            f"Stopping job {job_id}; the catalog is busy, so the daemon records it when it can"
        )
        return
    if job.status == "running" and not owner_alive(job):
        # Its daemon is gone: nobody would act on the request; the job ends here, unless
        # another host took it back meanwhile (fenced): that one sees the request and stops.
        try:
            store.finish_job(job_id, "cancelled", error="cancelled by user", fence=job)
        except FencedOut:
            pass
        job = store.get_job(job_id)
    if job.status == "cancelled":
        failed = fail_dependents(store, job_id)
        click.echo(
            f"Cancelled job {job_id}" + (f"; failed dependent job(s) {failed}" if failed else "")
        )
        return
    if not wait:
        click.echo(f"Stopping job {job_id}: its daemon stops it ('mlxd jobs show {job_id}')")
        return
    click.echo(f"Stopping job {job_id}...")
    job = _wait_end(job_id)
    if job.status == "running":
        raise UserError(f"job {job_id} is still running; the daemon has not stopped it yet")
    click.echo(f"Job {job_id} {job.status}")


def _wait_end(job_id: int, timeout_s: float = 30.0):
    import time

    reader = get_reader()
    deadline = time.monotonic() + timeout_s
    job = reader.job(job_id)
    while job.status == "running" and time.monotonic() < deadline:
        time.sleep(0.2)
        job = reader.job(job_id)
    return job


@jobs.command()
@click.argument("job_id", type=int)
@click.option(
    "--after",
    "after",
    type=int,
    metavar="ID",
    help="Wait on this job instead of the original's prerequisite",
)
@click.option("--wait", is_flag=True, help="Follow the new job")
@catalog_errors
def retry(job_id: int, after: int | None, wait: bool):
    """Queue a failed or cancelled job again: a new job, same parameters and pool."""
    store = get_store()
    old = store.get_job(job_id)
    if old.status not in ("failed", "cancelled"):
        raise UserError(f"job {job_id} is {old.status}; only failed or cancelled jobs are retried")
    params = old.params
    from mlxd.jobs import load_kind

    hook = getattr(load_kind(old.kind), "retry_params", None)
    if hook is not None:  # a kind whose job left something to go on from (a checkpoint)
        from mlxd.vocab.errors import SpecError

        try:
            params, note = hook(store, old)
        except SpecError as e:  # a refusal, not a usage error
            raise UserError(str(e)) from None
        if note:
            click.echo(f"Note: {note}", err=True)
    submit(
        old.kind,
        params,
        wait=wait,
        after=after if after is not None else old.after_job_id,
        priority=old.priority,
        timeout_s=old.timeout_s,
        max_attempts=old.max_attempts,
        label=f"retry of job {job_id} ({_describe(old)})",
        pool=old.pool,  # where it was sent (--pool, or placement then), not placed anew
    )


@jobs.command()
@click.argument("job_ids", type=int, nargs=-1, required=True)
@click.option(
    "--wait-timeout",
    "--timeout",
    "timeout_s",
    type=click.FloatRange(min=0, min_open=True, max=1e9),
    metavar="SECONDS",
    help=f"Give up after this many seconds (exit status {WAIT_TIMEOUT_EXIT})",
)
@catalog_errors
def wait(job_ids: tuple[int, ...], timeout_s: float | None):
    """Wait for jobs to end; exit 1 if one failed, 124 if the wait ran out."""
    import time

    deadline = time.monotonic() + timeout_s if timeout_s else None

    def wait_one(job_id: int) -> None:
        follow(job_id, timeout_s=timeout_s, deadline=deadline)

    _each_job(job_ids, wait_one, "did not succeed")
