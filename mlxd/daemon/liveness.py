"""Is the process that claimed a job still there, and is a pid really ours?

A pid alone may have been reused, by anything, including a job of another MLXD_HOME on the
same machine (every test suite runs several homes at once). A process is taken for ours only
when its start time matches the one recorded when we started it, and, where the OS lets us
read it, its environment names this home.
"""

from __future__ import annotations

import os
from datetime import datetime
from pathlib import Path

import psutil

from mlxd.vocab import settings

CHILD_MODULE = "mlxd.daemon.child"


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


def start_time(pid: int) -> float | None:
    """The process's start time (seconds since the epoch), recorded to recognise it later."""
    try:
        return psutil.Process(pid).create_time()
    except psutil.Error:
        return None


def is_our_child(pid: int | None, started: float | None, home: Path) -> bool:
    """Whether ``pid`` is still the job child this home started at time ``started``."""
    if not pid or started is None:
        return False  # without a recorded start time nothing proves it is ours
    try:
        proc = psutil.Process(pid)
        if abs(proc.create_time() - started) > 0.05:
            return False  # the pid was reused
        if not any(CHILD_MODULE in part for part in proc.cmdline()):
            return False
        try:
            env_home = proc.environ().get(settings.HOME.name)
        except (psutil.AccessDenied, OSError):
            env_home = None  # unreadable (another user, macOS): the start time has to do
        if env_home is not None and Path(env_home).resolve() != home.resolve():
            return False
        return proc.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def kill_our_child(pid: int | None, started: float | None, home: Path) -> bool:
    """SIGKILL a leftover job child if (and only if) it is provably ours; True if killed."""
    if not is_our_child(pid, started, home):
        return False
    try:
        proc = psutil.Process(pid)
        proc.kill()
        proc.wait(5)
    except psutil.Error:
        pass
    return True
