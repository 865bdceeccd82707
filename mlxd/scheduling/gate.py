"""The prerequisite gate (``--after``): may a queued job start, and failing the jobs that
wait on one that did not succeed. One answer for the submit, the daemon and recovery."""

from __future__ import annotations


def prerequisite_gate(store, job) -> str:
    """May ``job`` start? "go"; "wait" (its prerequisite is queued or running: released when
    that ends); or "failed" (its prerequisite did not succeed: this job and its dependents
    were failed)."""
    if job.after_job_id is None:
        return "go"
    pre = store.get_job(job.after_job_id)
    if pre.status in ("queued", "running"):
        return "wait"
    if pre.status != "succeeded":
        fail_dependents(store, pre.id)
        return "failed"
    return "go"


def fail_dependents(store, job_id: int) -> list[int]:
    """Fail every queued job waiting (directly or not) on a job that did not succeed."""
    job = store.get_job(job_id)
    reason = f"prerequisite job {job_id} {job.status}" + (f": {job.error}" if job.error else "")
    failed, frontier = [], [job_id]
    while frontier:
        parent = frontier.pop()
        for dep in store.dependents(parent):
            if store.fail_queued(dep.id, reason):
                failed.append(dep.id)
                frontier.append(dep.id)
    return failed
