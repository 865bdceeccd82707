"""The daemon's reliability settings, read from the environment (tests shorten them).

| variable | default | what |
|---|---|---|
| MLXD_LEASE_TIMEOUT_S | 120 | a job's child that shows no life (no heartbeat, no CPU) this long is killed (read in `mlxd/config.py`: placement judges machines by it too) |
| MLXD_CHILD_HEARTBEAT_S | 2 | how often a child says it is alive |
| MLXD_HOUSEKEEPING_S | 2 | how often the daemon checks leases, the spare and the queue |
| MLXD_DISK_RESERVE_BYTES | 512 MB | a job that writes models stops when less is free |
| MLXD_SPARE_CHILD | 1 | 0: no pre-started spare child |
| MLXD_JOB_MEMORY_LIMIT_BYTES | unset | RLIMIT_AS for each job's child |
"""

from __future__ import annotations

import os

ENV_CHILD_HEARTBEAT = "MLXD_CHILD_HEARTBEAT_S"
ENV_HOUSEKEEPING = "MLXD_HOUSEKEEPING_S"
ENV_DISK_RESERVE = "MLXD_DISK_RESERVE_BYTES"
ENV_SPARE_CHILD = "MLXD_SPARE_CHILD"
ENV_MEMORY_LIMIT = "MLXD_JOB_MEMORY_LIMIT_BYTES"

# A daemon that died this many times in a row while one job ran: that job is the cause.
POISON_PILL_DEATHS = 5
# A job whose own process crashed (signal, out of memory, no sign of life) runs once more.
CRASH_RETRIES = 1
# Queued rows younger than this are left to the CLI that is still enqueueing them.
RECONCILE_GRACE_S = 2.0


def _float(name: str, default: float) -> float:
    try:
        value = float(os.environ.get(name, ""))
    except ValueError:
        return default
    return value if value > 0 else default


def child_heartbeat_s() -> float:
    return _float(ENV_CHILD_HEARTBEAT, 2.0)


def housekeeping_s() -> float:
    return _float(ENV_HOUSEKEEPING, 2.0)


def disk_reserve_bytes() -> int:
    return int(_float(ENV_DISK_RESERVE, 512e6))


def spare_enabled() -> bool:
    return os.environ.get(ENV_SPARE_CHILD, "1") != "0"


def memory_limit_bytes() -> int | None:
    value = _float(ENV_MEMORY_LIMIT, 0.0)
    return int(value) if value else None


def time_limit_s(kind: str, requested: float | None) -> float:
    """The job's time limit: what was asked for, else its kind's ``TIME_LIMIT_S``. Generous:
    a limit is there to free the queue from a job that will never end, not to judge a slow one."""
    if requested:
        return requested
    from mlxd.jobs import load_kind

    return float(load_kind(kind).TIME_LIMIT_S)
