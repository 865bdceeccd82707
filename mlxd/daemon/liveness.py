"""Is the process that claimed a job still there? (A pid alone may have been reused.)"""

from __future__ import annotations

import os
from datetime import datetime

import psutil


def process_alive(pid: int | None, started_before: datetime | None = None) -> bool:
    """True if ``pid`` runs and, when given, was started before ``started_before``."""
    if not pid:
        return False
    try:
        proc = psutil.Process(pid)
        if proc.status() == psutil.STATUS_ZOMBIE:
            return False
        if started_before is not None and proc.create_time() > started_before.timestamp() + 1:
            return False  # a newer process that got the same pid
        return True
    except psutil.Error:
        return False


def owner_alive(job) -> bool:
    """Whether the process running ``job`` (a daemon, or a CLI running it in the foreground)
    is alive and is not this process."""
    if job.daemon_pid == os.getpid():
        return True
    return process_alive(job.daemon_pid, job.started_at)
