"""Recovery: the catalog is the truth, huey only delivers at most once.

Run at start-up and, in part, every few seconds by the housekeeper:
- running jobs whose daemon is gone are queued again without charging an attempt (a daemon
  death is not the job's fault), unless the daemon died that many times in a row during the
  same job: a poison pill, failed as such;
- their old children are killed only when provably ours (start time, MLXD_HOME);
- folders moved into models/ whose catalog commit was lost are adopted (their commit marker
  holds the result) or removed; stale partial folders are removed;
- queued rows that huey does not hold are enqueued again.
"""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Callable, Collection
from pathlib import Path

from mlxd.catalog.store import CatalogError, FencedOut, NotFound, Store
from mlxd.config import Paths
from mlxd.daemon import hosts, queue
from mlxd.daemon.liveness import kill_our_child, process_alive
from mlxd.daemon.runner import COMMIT_MARKER, HEARTBEAT_S, commit_result, read_commit_marker
from mlxd.jobs import load_kind
from mlxd.scheduling.gate import fail_dependents, prerequisite_gate
from mlxd.scheduling.queue import wake
from mlxd.vocab import settings

log = logging.getLogger("mlxd.recovery")
# A daemon that died this many times in a row while one job ran: that job is the cause.
POISON_PILL_DEATHS = 5


def recover(store: Store, paths: Paths) -> None:
    """Start-up recovery (this process holds the home's lock: no other daemon runs)."""
    adopt_committed_folders(store, paths)
    keep_partial = recover_orphaned_jobs(store, paths, supervised=set)
    remove_partials(paths, keep_partial)
    reconcile_queue(store, paths, grace_s=0.0)


def recover_orphaned_jobs(
    store: Store, paths: Paths, supervised: Callable[[], Collection[int]]
) -> set[str]:
    """Queue again (or end) running jobs that no live process supervises.

    ``supervised``: the jobs this daemon's own workers are running now. Returns the partial
    folder names of jobs that others (a CLI running a job in the foreground) still run.
    """
    keep_partial: set[str] = set()
    me = os.getpid()
    me_host = hosts.host_id()
    machines = None
    for job in store.list_jobs(["running"]):
        if job.host and job.host != me_host:
            # Another host's job: its pid means nothing here; its host's heartbeat does.
            if machines is None:
                machines = {m.host_id: m for m in store.machines()}
            if not _host_dead(job, machines):
                continue
            _take_back(store, paths, job)
            continue
        if job.daemon_pid == me:
            if job.id in supervised():
                continue
        elif process_alive(job.daemon_pid, job.started_at):
            keep_partial.add(f"job-{job.id}-attempt-{job.attempts}")
            continue
        kill_our_child(job.pid, job.pid_started_at, paths.home)
        deaths = job.interruptions + 1
        if job.cancel_requested or deaths >= POISON_PILL_DEATHS:
            why = (
                "cancelled by user"
                if job.cancel_requested
                else f"poison pill: the daemon died {deaths} times in a row while this job "
                "ran; not run again"
            )
            if not _end_for_good(store, job, why, deaths):
                continue
            if not job.cancel_requested:
                log.warning("job %s failed as a poison pill after %s daemon deaths", job.id, deaths)
        elif store.requeue_after_interruption(
            job, f"the daemon stopped during this job ({deaths}x); queued again"
        ):
            wake(paths, job)
            log.info("job %s was running when its daemon stopped; queued again", job.id)
    return keep_partial


def _end_for_good(store: Store, job, why: str, deaths: int) -> bool:
    """End a job whose daemon or host died (cancelled, or failed as a poison pill) and its
    dependents, in a write fenced by the row as read here; False if the job ended or moved
    on meanwhile (another daemon took it back first, or its host woke up)."""
    status, extra = (
        ("cancelled", {}) if job.cancel_requested else ("failed", {"interruptions": deaths})
    )
    try:
        store.finish_job(job.id, status, error=why, fence=job, **extra)
    except FencedOut:
        return False
    fail_dependents(store, job.id)
    return True


def _host_dead(job, machines) -> bool:
    return hosts.job_host_dead(job, machines, settings.LEASE_TIMEOUT_S.get(), HEARTBEAT_S)


def _take_back(store: Store, paths: Paths, job) -> None:
    """Queue again (once: the first daemon to update the row wins) a dead host's job."""
    deaths = job.interruptions + 1
    if deaths >= POISON_PILL_DEATHS or job.cancel_requested:
        why = (
            "cancelled by user"
            if job.cancel_requested
            else f"poison pill: its host died {deaths} times in a row while this job ran"
        )
        # One fenced write (a take-back, then an end by id, would end a run that another
        # host claimed in between).
        _end_for_good(store, job, why, deaths)
        return
    msg = f"host {job.host} stopped during this job ({deaths}x); queued again"
    if store.take_back(job, msg):
        wake(paths, job)
        log.warning("job %s: its host %s stopped beating; queued again", job.id, job.host)


def remove_partials(paths: Paths, keep: Collection[str]) -> None:
    if not paths.partial.exists():
        return
    for p in paths.partial.iterdir():
        if p.name in keep:
            continue
        shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)


def adopt_committed_folders(store: Store, paths: Paths) -> list[int]:
    """Folders in models/ with a commit marker: finish their job, or remove them."""
    adopted = []
    if not paths.models.exists():
        return adopted
    for folder in sorted(paths.models.iterdir()):
        if folder.name.startswith(".") or not (folder / COMMIT_MARKER).exists():
            continue
        if store.find_model(str(folder)) is not None:
            (folder / COMMIT_MARKER).unlink(missing_ok=True)  # committed; the marker was not
            continue
        marker = read_commit_marker(folder)
        job_id = marker.get("job_id") if marker else None
        try:
            job = store.get_job(int(job_id)) if job_id is not None else None
        except NotFound:
            job = None
        if (
            job is not None
            and job.status in ("queued", "running")
            and _ours(job, marker)
            and _adopt(store, paths, job, folder, marker["result"])
        ):
            adopted.append(job.id)
            continue
        log.warning("removing %s: its job's catalog commit was lost", folder)
        shutil.rmtree(folder, ignore_errors=True)
    return adopted


def _ours(job, marker) -> bool:
    """Whether the job's row is still at the attempt, on this host, that left the folder (not
    a later one: another host took the job back and runs or ran it)."""
    return (
        job.host in (None, hosts.host_id())
        and marker.get("attempt") == job.attempts
        and marker.get("host", job.host) == job.host
    )


def _adopt(store: Store, paths: Paths, job, folder: Path, result) -> bool:
    kill_our_child(job.pid, job.pid_started_at, paths.home)
    try:
        kind = load_kind(job.kind)
        spec = kind.Spec.from_params(job.params)
        if getattr(spec, "name", None) != folder.name:
            return False
        inputs = kind.prepare(spec, store, job)
        commit_result(store, job, kind, spec, inputs, result, folder)
    except (CatalogError, ValueError, TypeError, KeyError) as e:
        log.warning("could not adopt %s for job %s: %s", folder, job.id, e)
        return False
    (folder / COMMIT_MARKER).unlink(missing_ok=True)
    log.info("job %s: adopted %s (its result was on disk; the commit was lost)", job.id, folder)
    for dep in store.dependents(job.id):
        wake(paths, dep)
    return True


def unqueued_jobs(store: Store, paths: Paths, grace_s: float) -> list:
    """Queued rows, submitted over ``grace_s`` ago and free to run, that huey does not hold in
    their pool's queue: a lost or failed enqueue, or a job waiting for memory that asks again
    (raises what the queue raises when it cannot be read)."""
    from mlxd.catalog.models import utcnow

    pending: dict[str, set[int]] = {}
    now = utcnow()
    out = []
    for job in store.list_jobs(["queued"]):
        if job.pool not in pending:
            pending[job.pool] = queue.pending_job_ids(paths, job.pool)
        if job.id in pending[job.pool]:
            continue
        submitted = job.submitted_at
        if submitted.tzinfo is None:
            submitted = submitted.replace(tzinfo=now.tzinfo)
        if grace_s and (now - submitted).total_seconds() < grace_s:
            continue  # its CLI may be enqueueing it right now
        if prerequisite_gate(store, job) == "go":
            out.append(job)
    return out


def reconcile_queue(store: Store, paths: Paths, grace_s: float) -> list[int]:
    """Enqueue the :func:`unqueued_jobs`; the ids of the lost ones (not those waiting)."""
    enqueued = []
    for job in unqueued_jobs(store, paths, grace_s):
        wake(paths, job)
        if not job.wait_code:  # a job waiting for room comes back by design
            enqueued.append(job.id)
    return enqueued
