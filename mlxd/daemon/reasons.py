"""Why a job's process ended, in words a person can act on, and as a code a decision reads.

"Out of memory" only when the kernel or MLX said so; "disk full" with the path and what is
free; "address space limit" when RLIMIT_AS was what ran out; otherwise the plain signal.
Every ending, crash and wait carries a ``Code`` beside its text: the runner and recovery
decide on the code, never on the wording (which is for people and may change).
"""

from __future__ import annotations

import re
import signal
from dataclasses import dataclass
from pathlib import Path

from mlxd.scheduling.admission import free_bytes
from mlxd.vocab.fmt import size as human_bytes
from mlxd.vocab.outcomes import Code  # one byte format everywhere

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
