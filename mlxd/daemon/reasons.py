"""Why a job's process ended, in words a person can act on, and as a code a decision reads.

"Out of memory" only when the kernel or MLX said so; "disk full" with the path and what is
free; "address space limit" when RLIMIT_AS was what ran out; otherwise the plain signal.
Every ending, crash and wait carries a ``Code`` beside its text: the runner and recovery
decide on the code, never on the wording (which is for people and may change).
"""

from __future__ import annotations

import re
import shutil
import signal
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from mlxd.reports.fmt import size as human_bytes  # one byte format everywhere

# What MLX, the C++ runtime and Python print when an allocation fails.
_OOM_PATTERNS = re.compile(
    r"std::bad_alloc|MemoryError|\[metal::malloc\]|out of memory|Cannot allocate memory"
    r"|Unable to allocate|memory allocation of \d+ bytes failed",  # the last: Rust's abort
    re.IGNORECASE,
)
# Under RLIMIT_AS a thread's stack cannot be mapped either: pthread_create says EAGAIN.
_ADDRESS_SPACE_PATTERNS = re.compile(
    r"Resource temporarily unavailable|can't start new thread", re.IGNORECASE
)
_DISK_FULL_PATTERNS = re.compile(
    r"No space left on device|Unable to write \d+ bytes|database or disk is full|errno 28",
    re.IGNORECASE,
)


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
class Crash:
    """A job's process that died of something other than its own Python error."""

    code: Code
    reason: str
    retryable: bool = True


@dataclass
class Failure:
    """A job's own ending that is not a crash: its error, or a limit it hit."""

    code: Code
    reason: str


@dataclass
class Wait:
    """Why a queued job does not start yet; ``reason`` is the job's message ("waiting: ...")."""

    code: Code
    reason: str


def free_bytes(path: Path) -> int:
    """Free space where ``path`` lives (the nearest existing parent)."""
    p = Path(path)
    while not p.exists() and p != p.parent:
        p = p.parent
    return shutil.disk_usage(p).free


def disk_full(path: Path, reserve: int | None = None) -> str:
    free = free_bytes(path)
    note = f", below the {human_bytes(reserve)} reserve" if reserve else ""
    return f"disk full: {path} has {human_bytes(free)} free{note}"


def looks_like_disk_full(text: str | None) -> bool:
    return bool(text and _DISK_FULL_PATTERNS.search(text))


def looks_like_oom(text: str | None) -> bool:
    return bool(text and _OOM_PATTERNS.search(text))


def _address_space(memory_limit: int) -> str:
    return f"address space limit: the job hit RLIMIT_AS ({human_bytes(memory_limit)})"


def describe_error(message: str, *, output_path: Path | None, memory_limit: int | None) -> Failure:
    """A job's own one-line error, rewritten where it hides the true cause."""
    if looks_like_disk_full(message) and output_path is not None:
        return Failure(Code.DISK_FULL, disk_full(output_path))
    if memory_limit and _ADDRESS_SPACE_PATTERNS.search(message):
        return Failure(Code.ADDRESS_SPACE, _address_space(memory_limit))
    if looks_like_oom(message):
        if memory_limit:
            return Failure(Code.ADDRESS_SPACE, _address_space(memory_limit))
        return Failure(Code.OOM, f"out of memory ({message})")
    return Failure(Code.JOB_ERROR, message)


def describe_exit(
    rc: int,
    *,
    log_tail: str = "",
    kernel_oom_kills: int = 0,
    memory_limit: int | None = None,
    output_path: Path | None = None,
) -> Crash:
    """The reason for a child that exited with ``rc`` without reporting an error itself."""
    if kernel_oom_kills > 0:
        return Crash(
            Code.KERNEL_OOM, "out of memory: the kernel's OOM killer ended the job's process"
        )
    if looks_like_disk_full(log_tail) and output_path is not None:
        return Crash(Code.DISK_FULL, disk_full(output_path), retryable=False)
    if looks_like_oom(log_tail) or (memory_limit and _ADDRESS_SPACE_PATTERNS.search(log_tail)):
        if memory_limit:
            return Crash(Code.ADDRESS_SPACE, _address_space(memory_limit), retryable=False)
        return Crash(Code.OOM, "out of memory (the job's log says an allocation failed)")
    if rc < 0:
        try:
            name = signal.Signals(-rc).name
        except ValueError:
            name = f"signal {-rc}"
        return Crash(Code.SIGNAL, f"the job's process was killed by signal {-rc} ({name})")
    return Crash(Code.EXIT_STATUS, f"the job's process exited with status {rc} without a result")


def hung(lease_s: float) -> Crash:
    """A child silent and idle for the whole lease (stopped or deadlocked): it is killed."""
    return Crash(
        Code.HUNG,
        f"the job's process showed no sign of life for {lease_s:g} s (stopped or hung); killed",
    )


def killed_by_kernel_oom() -> Crash:
    """A SIGKILL while the cgroup's OOM-kill count rose."""
    return Crash(Code.KERNEL_OOM, "out of memory: the kernel's OOM killer ended the job")


def cgroup_oom_kills() -> int | None:
    """The cgroup's count of OOM kills (Linux cgroup v2), or None where there is none."""
    try:
        text = Path("/sys/fs/cgroup/memory.events").read_text()
    except OSError:
        return None
    for line in text.splitlines():
        key, _, value = line.partition(" ")
        if key == "oom_kill":
            return int(value)
    return None


def log_tail(path: Path, limit: int = 4000) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(0, 2)
            size = f.tell()
            f.seek(max(0, size - limit))
            return f.read().decode(errors="replace")
    except OSError:
        return ""
