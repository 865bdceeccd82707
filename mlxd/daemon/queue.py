"""The huey queue (SQLite, in MLXD_HOME). Only job ids travel through it."""

from __future__ import annotations

from functools import cache

from huey import SqliteHuey

from mlxd.config import Paths

TASK_NAME = "run_job"


@cache
def get_huey(queue_db: str) -> SqliteHuey:
    huey = SqliteHuey("mlxd", filename=queue_db, results=False, utc=True, timeout=30)

    @huey.task(name=TASK_NAME)
    def run_job(job_id: int) -> None:
        # Runs in the daemon's worker thread; the daemon module holds the runtime state.
        from mlxd.daemon.service import handle_job

        handle_job(job_id)

    huey.run_job = run_job
    return huey


def enqueue(paths: Paths, job_id: int, priority: int = 0) -> None:
    huey = get_huey(str(paths.queue_db))
    huey.enqueue(huey.run_job.s(job_id, priority=priority))


def pending_job_ids(paths: Paths) -> set[int]:
    huey = get_huey(str(paths.queue_db))
    ids = set()
    for task in list(huey.pending()) + list(huey.scheduled()):
        if task.args:
            ids.add(int(task.args[0]))
    return ids
