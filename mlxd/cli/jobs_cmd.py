"""mlxd jobs list|show|logs|cancel|retry|wait."""

from __future__ import annotations

import click

from mlxd.cli.common import (
    UserError,
    catalog_errors,
    echo_csv,
    echo_json,
    follow,
    get_store,
    output_options,
    render_table,
    row_dict,
    submit,
    when,
)

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
@click.option("--status", "statuses", multiple=True, type=click.Choice(STATUSES),
              help="Only jobs with this status (repeatable)")  # fmt: skip
@click.option("--kind", help="Only jobs of this kind")
@click.option("--limit", type=int, default=50, show_default=True, help="Newest N jobs (0: all)")
@output_options()
def list_(statuses, kind, limit, json_, csv_):
    """List jobs, oldest first."""
    rows = get_store().list_jobs(statuses or None, kind=kind, limit=limit)
    if json_:
        echo_json(rows)
        return
    if csv_:
        echo_csv([row_dict(j) for j in rows])
        return
    if not rows:
        click.echo("No jobs.")
        return
    table = [
        (
            j.id,
            j.kind,
            j.status,
            f"{j.progress * 100:.0f}%" if j.status == "running" else "",
            j.submitted_by,
            when(j.submitted_at),
            _describe(j),
            j.error or (j.message if j.status == "running" else ""),
        )
        for j in rows
    ]
    click.echo(
        render_table(["ID", "KIND", "STATUS", "PROGRESS", "BY", "SUBMITTED", "WHAT", "NOTE"], table)
    )


@jobs.command()
@click.argument("job_id", type=int)
@output_options(csv_ok=False)
@catalog_errors
def show(job_id: int, json_: bool):
    """Show one job."""
    j = get_store().get_job(job_id)
    if json_:
        echo_json(j)
        return
    facts = [
        ("id", j.id),
        ("kind", j.kind),
        ("what", _describe(j)),
        ("status", j.status),
        ("progress", f"{j.progress * 100:.0f}% {j.message or ''}".strip()),
        ("error", j.error),
        ("after job", j.after_job_id),
        ("attempts", f"{j.attempts} of {j.max_attempts}"),
        ("priority", j.priority),
        ("submitted", f"{when(j.submitted_at)} by {j.submitted_by}"),
        ("started", when(j.started_at)),
        ("finished", when(j.finished_at)),
        ("host", j.host),
        ("pid", j.pid),
        ("result", ", ".join(f"{k}={v}" for k, v in (j.result or {}).items())),
        ("log", j.log_path),
    ]
    width = max(len(k) for k, _ in facts)
    for k, v in facts:
        if v not in (None, ""):
            click.echo(f"{k.ljust(width)}  {v}")
    click.echo("params".ljust(width) + "  " + ", ".join(f"{k}={v}" for k, v in j.params.items()))


@jobs.command()
@click.argument("job_id", type=int)
@click.option("-f", "--follow", is_flag=True, help="Keep printing until the job ends")
@catalog_errors
def logs(job_id: int, follow: bool):
    """Print a job's full log (its child process's output)."""
    import time
    from pathlib import Path

    store = get_store()
    j = store.get_job(job_id)
    path = Path(j.log_path) if j.log_path else None
    if not follow and (path is None or not path.exists()):
        raise UserError(f"job {job_id} has no log yet (status: {j.status})")
    offset = 0
    while True:
        if path is not None and path.exists():
            with open(path, errors="replace") as f:
                f.seek(offset)
                chunk = f.read()
                offset = f.tell()
            click.echo(chunk, nl=False)
        if not follow or j.status not in ("queued", "running"):
            return
        time.sleep(0.3)
        j = store.get_job(job_id)


@jobs.command()
@click.argument("job_id", type=int)
@catalog_errors
def cancel(job_id: int):
    """Cancel a queued job, or stop a running one."""
    from mlxd.daemon.liveness import owner_alive

    store = get_store()
    job = store.request_cancel(job_id)
    if job.status == "running" and not owner_alive(job):
        # Its daemon is gone: nobody would act on the request; the job ends here.
        store.finish_job(job_id, "cancelled", error="cancelled by user")
        job = store.get_job(job_id)
    if job.status == "cancelled":
        failed = store.fail_dependents(job_id)
        click.echo(
            f"Cancelled job {job_id}" + (f"; failed dependent job(s) {failed}" if failed else "")
        )
        return
    click.echo(f"Stopping job {job_id}...")
    job = _wait_end(job_id)
    if job.status == "running":
        raise UserError(f"job {job_id} is still running; the daemon has not stopped it yet")
    click.echo(f"Job {job_id} {job.status}")


def _wait_end(job_id: int, timeout_s: float = 30.0):
    import time

    store = get_store()
    deadline = time.monotonic() + timeout_s
    job = store.get_job(job_id)
    while job.status == "running" and time.monotonic() < deadline:
        time.sleep(0.2)
        job = store.get_job(job_id)
    return job


@jobs.command()
@click.argument("job_id", type=int)
@click.option("--after", "after", type=int, metavar="ID",
              help="Wait on this job instead of the original's prerequisite")  # fmt: skip
@click.option("--wait", is_flag=True, help="Follow the new job")
@catalog_errors
def retry(job_id: int, after: int | None, wait: bool):
    """Queue a failed or cancelled job again, as a new job with the same parameters."""
    store = get_store()
    old = store.get_job(job_id)
    if old.status not in ("failed", "cancelled"):
        raise UserError(f"job {job_id} is {old.status}; only failed or cancelled jobs are retried")
    submit(
        old.kind,
        old.params,
        wait=wait,
        after=after if after is not None else old.after_job_id,
        priority=old.priority,
        timeout_s=old.timeout_s,
        max_attempts=old.max_attempts,
        label=f"retry of job {job_id} ({_describe(old)})",
    )


@jobs.command()
@click.argument("job_ids", type=int, nargs=-1, required=True)
@click.option("--timeout", "timeout_s", type=click.FloatRange(min=0, min_open=True),
              help="Give up after this many seconds")  # fmt: skip
@catalog_errors
def wait(job_ids: tuple[int, ...], timeout_s: float | None):
    """Wait for jobs to finish; exit 1 if any did not succeed."""
    errors = []
    for job_id in job_ids:
        try:
            follow(job_id, timeout_s=timeout_s)
        except UserError as e:
            if len(job_ids) == 1:
                raise
            click.echo(f"Error: {e.message}", err=True)
            errors.append(job_id)
    if errors:
        raise UserError(f"job(s) {', '.join(map(str, errors))} did not succeed")
