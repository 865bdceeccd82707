"""How a job's attempt ended, or why a queued job waits, as a code a decision reads.

Every ending, crash and wait carries a ``Code`` beside its text (``daemon/reasons.py`` makes
the words): the runner, recovery and admission decide on the code, never on the wording.
The catalog stores the wait codes (``job.wait_code``).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Code(StrEnum):
    """What ended a job's attempt, or keeps a queued job waiting."""

    # The job's process died of something other than its own Python error (a Crash).
    KERNEL_OOM = "kernel_oom"  # the kernel's (or cgroup's) OOM killer
    OOM = "oom"  # MLX or the runtime said an allocation failed
    ADDRESS_SPACE = "address_space"  # RLIMIT_AS (MLXD_JOB_MEMORY_LIMIT_BYTES) ran out
    DISK_FULL = "disk_full"  # no space where the job writes (or below the reserve)
    SIGNAL = "signal"  # killed by a signal
    EXIT_STATUS = "exit_status"  # exited without a result or an error
    HUNG = "hung"  # no sign of life (no heartbeat, no CPU) for the lease: killed
    # The job's own ending.
    SUCCEEDED = "succeeded"
    JOB_ERROR = "job_error"  # the job's own one-line error
    TIMED_OUT = "timed_out"
    NO_RESULT = "no_result"  # the child ended cleanly but sent no result
    INVALID = "invalid"  # the spec or its catalog references were refused before the start
    FOLDER_EXISTS = "folder_exists"  # a model folder already holds the output's name
    NOT_RECORDED = "not_recorded"  # the catalog refused the result
    CRASHED = "crashed"  # a crash, queued to run once more
    # Endings that are not the job's fault or choice.
    PREREQUISITE_FAILED = "prerequisite_failed"
    REFUSED = "refused"  # admission: it can never fit this daemon's budget
    CANCELLED = "cancelled"  # cancelled by the user
    DAEMON_STOPPED = "daemon_stopped"  # queued again: the daemon is stopping
    CATALOG_LOCKED = "catalog_locked"  # stopping while the catalog refused writes
    CATALOG_UNREACHABLE = "catalog_unreachable"  # queued again: the database went away
    TAKEN_BACK = "taken_back"  # another host took the job back: this attempt is discarded
    INTERNAL_ERROR = "internal_error"  # a bug in the supervisor
    # Why a queued job waits (stored with the job's message: the catalog's ``wait_code``).
    WAIT_MEMORY = "wait_memory"
    WAIT_DISK = "wait_disk"


@dataclass
class Wait:
    """Why a queued job does not start yet; ``reason`` is the job's message ("waiting: ...")."""

    code: Code
    reason: str
