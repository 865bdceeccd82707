"""What the commands share: the catalog handle, errors, output formats, job submission."""

from __future__ import annotations

import csv
import io
import json
import math
import sys
import time
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

import click

from mlxd.config import Paths, paths

FAILED_JOB_EXIT = 1


class UserError(click.ClickException):
    """A problem the user can fix; exit status 1."""

    exit_code = 1


class BadUsage(click.UsageError):
    """Bad arguments; exit status 2."""

    exit_code = 2


def get_paths() -> Paths:
    return paths()


_store = None


def get_store():
    """The catalog (opened and migrated once per process)."""
    global _store
    if _store is None:
        from mlxd.catalog.store import Store

        _store = Store(get_paths())
    return _store


def catalog_errors(fn: Callable) -> Callable:
    """Turn catalog and spec errors into one-line CLI errors with the right exit status."""
    import functools

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        from mlxd.catalog.store import CatalogError, NotFound
        from mlxd.jobs.base import SpecError
        from mlxd.modelfolder import ModelFolderError

        try:
            return fn(*args, **kwargs)
        except (NotFound, SpecError, ModelFolderError) as e:
            raise BadUsage(str(e.args[0])) from None
        except CatalogError as e:
            raise UserError(str(e.args[0])) from None

    return wrapper


# -- output ---------------------------------------------------------------------------------


def output_options(csv_ok: bool = True) -> Callable:
    """--json (and --csv) on a list/show command, sqlite-utils style."""

    def decorator(fn):
        fn = click.option("json_", "--json", is_flag=True, help="Output as JSON")(fn)
        if csv_ok:
            fn = click.option("csv_", "--csv", is_flag=True, help="Output as CSV")(fn)
        return fn

    return decorator


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
    """A catalog row as a dict, columns in their declared order."""
    return {name: getattr(row, name) for name in type(row).model_fields}


def echo_json(value: Any) -> None:
    click.echo(json.dumps(jsonable(value), indent=2))


def echo_csv(rows: Sequence[dict[str, Any]]) -> None:
    buf = io.StringIO()
    if rows:
        writer = csv.DictWriter(buf, fieldnames=list(rows[0]))
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


def human_bytes(n: int | None) -> str:
    if n is None:
        return ""
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return str(n)


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


# -- submitting and following jobs ------------------------------------------------------------


def job_options(fn: Callable) -> Callable:
    """Options every job-submitting command takes."""
    opts = [
        click.option("--wait", is_flag=True, help="Follow the job with a progress bar; exit 1 if it fails"),
        click.option("--after", "after", type=int, metavar="ID", help="Start only after job ID succeeded"),
        click.option("--priority", type=int, default=0, show_default=True, help="Higher runs first"),
        click.option("--timeout", "timeout_s", type=click.FloatRange(min=0, min_open=True, max=1e9), metavar="SECONDS", help="Fail the job if it runs longer"),
    ]  # fmt: skip
    for opt in reversed(opts):
        fn = opt(fn)
    return fn


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
) -> int:
    """Record a job in the catalog, hand its id to the queue, and maybe follow it.

    ``spec`` is a kind's Spec, or the params dict of an earlier job (retry).
    """
    from mlxd.daemon.service import status

    if timeout_s is not None and not math.isfinite(timeout_s):
        raise BadUsage("--timeout must be a number of seconds")
    p = get_paths()
    running = status(p).running
    if wait and not running:
        raise UserError(
            "the daemon is not running; start it with 'mlxd daemon start' "
            "(or leave out --wait to queue the job for later)"
        )
    store = get_store()
    check_prerequisite(after)
    params = spec if isinstance(spec, dict) else spec.to_params()
    job = store.submit_job(kind, params, priority=priority, after_job_id=after,
                           timeout_s=timeout_s, max_attempts=max_attempts)  # fmt: skip
    release_if_runnable(job.id)
    if not quiet:
        desc = label or describe(kind, spec)
        click.echo(f"Queued job {job.id}: {desc}" + (f" (after job {after})" if after else ""))
        if not running:
            click.echo(
                "Note: the daemon is not running; the job will start with 'mlxd daemon start'.",
                err=True,
            )
    if wait:
        follow(job.id)
    return job.id


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
    if job.after_job_id is not None:
        pre = store.get_job(job.after_job_id)
        if pre.status in ("queued", "running"):
            return
        if pre.status != "succeeded":
            store.fail_dependents(pre.id)
            return
    enqueue(get_paths(), job.id, priority=job.priority)


def follow(job_id: int, *, timeout_s: float | None = None, show_progress: bool = True) -> Any:
    """Show a job's progress until it ends; UserError (exit 1) if it did not succeed."""
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    store = get_store()
    job = store.get_job(job_id)
    deadline = time.monotonic() + timeout_s if timeout_s else None
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
                raise UserError(f"job {job_id} still {job.status} after {timeout_s:g} s")
            time.sleep(0.2)
            job = store.get_job(job_id)
            progress.update(task, completed=job.progress, message=job.message or job.status)
            if time.monotonic() - last_check >= 1.0:
                last_check = time.monotonic()
                stalled = stalled + 1 if _nobody_runs(job) else 0
                if stalled >= 3:  # a few seconds' grace: a daemon may be restarting
                    raise UserError(
                        f"job {job_id} is {job.status} but no daemon is running it; "
                        "start one with 'mlxd daemon start'"
                    )
    if job.status != "succeeded":
        raise UserError(f"job {job.id} {job.status}: {job.error or 'no reason recorded'}")
    if show_progress:
        summary = ", ".join(
            f"{k.replace('_', ' ')} {_short(v)}"
            for k, v in (job.result or {}).items()
            if v is not None
        )
        click.echo(f"Job {job.id} succeeded" + (f": {summary}" if summary else ""))
    return job


def _nobody_runs(job) -> bool:
    from mlxd.daemon.liveness import owner_alive
    from mlxd.daemon.service import status

    if job.status == "queued":
        return not status(get_paths()).running
    if job.status == "running":
        return not owner_alive(job)
    return False


def foreground_runner():
    """A Runner for a job this command runs itself (no daemon), releasing its dependents."""
    from mlxd.daemon.queue import enqueue
    from mlxd.daemon.runner import Runner

    store, p = get_store(), get_paths()
    return Runner(store, p, release=lambda j: enqueue(p, j, priority=store.get_job(j).priority))


def _short(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3g}"
    if isinstance(value, list):
        return ", ".join(_short(v) for v in value)
    return str(value)
