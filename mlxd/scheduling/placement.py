"""Placement: which pool a new job goes to, why nobody may run it, and why a queued job
waits. Pure rules over the catalog's machine rows (no daemon, no Click).

- A pool is a queue name; a daemon serves the pools it joined (``--pool``, default
  ``default``) and its own host pool ``@HOST``, where jobs that read a model only that host
  holds are sent.
- A machine whose row is older than the lease timeout (or says it stopped) is not live.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

from mlxd.scheduling.errors import NoPlace
from mlxd.vocab.fmt import size as human_bytes  # one byte format everywhere

DEFAULT_POOL = "default"
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")


def check_name(value: str, what: str) -> str:
    """A host id or pool name: letters, digits, '.', '_', '-' (it becomes a queue name)."""
    if not NAME_RE.match(value or ""):
        raise ValueError(
            f"{what} '{value}' is not a valid name (letters, digits, '.', '_', '-'; "
            "at most 63 characters)"
        )
    return value


def host_pool(host: str) -> str:
    """The pool only ``host`` serves (jobs that need a model only it holds)."""
    return f"@{host}"


def _now() -> datetime:
    return datetime.now(UTC)


def _aware(t: datetime | None) -> datetime | None:
    if t is None:
        return None
    return t if t.tzinfo else t.replace(tzinfo=UTC)


def live_machines(machines, lease_s: float, now: datetime | None = None) -> list:
    """The machines whose heartbeat is younger than the lease and that did not stop."""
    now = now or _now()
    return [
        m
        for m in machines
        if m.stopped_at is None
        and (now - _aware(m.heartbeat_at)).total_seconds()
        < _promised(getattr(m, "facts", None), lease_s)
    ]


def _promised(facts: dict[str, Any] | None, lease_s: float) -> float:
    """The lease a machine row's daemon promised (its facts), else the reader's own."""
    promised = (facts or {}).get("lease_s")
    return float(promised) if isinstance(promised, int | float) and promised > 0 else lease_s


def place(
    machines, lease_s: float, memory_bytes: int | None, pool: str | None
) -> tuple[str, str | None]:
    """(pool, note): where a job goes. ``pool`` given: there, with a note when no live
    machine serves it or none of them has the memory. Not given: the default pool if a live
    machine there fits the job, else the first pool that has one; raises NoPlace, saying
    why, when machines are known and none of them could ever run the job."""
    live = live_machines(machines, lease_s)

    def fits(m) -> bool:
        budget = (m.facts or {}).get("memory_budget_bytes")
        return memory_bytes is None or budget is None or memory_bytes <= budget

    if pool is not None:
        serving = [m for m in live if serves(m, pool)]
        if not serving:
            why = unserved(pool, machines, lease_s)
            return pool, f"{why}; the job waits: {serve_advice(pool)}"
        if not any(fits(m) for m in serving):
            return pool, f"no machine in pool '{pool}' has the memory for it now; it waits"
        return pool, None
    if not machines:
        return DEFAULT_POOL, None  # a single Mac before its daemon ever ran
    candidates = [m for m in (live or machines) if fits(m)]
    if not candidates:
        best = max(machines, key=lambda m: (m.facts or {}).get("memory_budget_bytes") or 0)
        budget = (best.facts or {}).get("memory_budget_bytes") or 0
        raise NoPlace(
            f"no machine can run this job: it needs about {human_bytes(memory_bytes or 0)} "
            f"and the largest budget is {human_bytes(budget)} ({best.host_id})"
        )
    if any(DEFAULT_POOL in (m.pools or []) for m in candidates):
        return DEFAULT_POOL, None
    pools = sorted({p for m in candidates for p in (m.pools or [])})
    return (pools[0] if pools else DEFAULT_POOL), None


# -- why a queued job waits (read by jobs list/show/wait, doctor and submit) -----------------


def serves(machine, pool: str) -> bool:
    """Whether ``machine``'s daemon consumes ``pool`` (one it joined, or its host pool)."""
    return pool in (machine.pools or []) or pool == host_pool(machine.host_id)


def _clock(t: datetime | None) -> str:
    """A moment as a person reads it: the local time today, else the date and time."""
    if t is None:
        return "never"
    local = _aware(t).astimezone()
    if local.date() == datetime.now().astimezone().date():
        return local.strftime("%H:%M")
    return local.strftime("%Y-%m-%d %H:%M")


def unserved(pool: str, machines, lease_s: float, now: datetime | None = None) -> str | None:
    """None when a live daemon serves ``pool``; else why nobody runs its jobs, e.g. "no daemon
    serves pool @vm; last seen never" or "host macb down since 14:02"."""
    if any(serves(m, pool) for m in live_machines(machines, lease_s, now)):
        return None
    if pool.startswith("@"):
        known = [m for m in machines if m.host_id == pool[1:]]
        if known:
            m = known[0]
            return f"host {m.host_id} down since {_clock(m.stopped_at or m.heartbeat_at)}"
    seen = [m.stopped_at or m.heartbeat_at for m in machines if serves(m, pool)]
    return f"no daemon serves pool {pool}; last seen {_clock(max(seen, key=_aware, default=None))}"


def serve_advice(pool: str) -> str:
    """What to do about a pool nobody serves."""
    if pool.startswith("@"):
        return (
            f"start the daemon on host {pool[1:]} (its MLXD_HOME), or cancel the job "
            f"('mlxd jobs cancel ID')"
        )
    return (
        f"start a daemon that serves it ('mlxd daemon start --pool {pool}'), or cancel the job "
        "('mlxd jobs cancel ID')"
    )


def wait_reason(job, machines, lease_s: float, pending=(), now: datetime | None = None) -> str:
    """Why a queued job has not started, in words a person can act on; computed from the
    catalog alone (its machine rows and the other queued and running jobs, ``pending``):
    "waiting for job 3", "no daemon serves pool @vm; last seen never", "host macb down
    since 14:02", "waiting: memory (...)" (the daemon's own word), "behind job 12", or
    "next in pool default". Never empty for a queued job."""
    if job.status != "queued":
        return ""
    if job.after_job_id is not None and any(j.id == job.after_job_id for j in pending):
        return f"waiting for job {job.after_job_id}"
    why = unserved(job.pool, machines, lease_s, now)
    if why is not None:
        return why
    message = job.message or ""
    if job.wait_code:  # the daemon's own word: "waiting: memory (...)"
        return message
    rank = (-job.priority, job.id)
    ahead = [
        j
        for j in pending
        if j.id != job.id
        and j.pool == job.pool
        and (
            j.status == "running"
            or (j.status == "queued" and j.after_job_id is None and (-j.priority, j.id) < rank)
        )
    ]
    if ahead:
        # The nearest one: the last queued ahead of it, else a running one.
        queued = [j for j in ahead if j.status == "queued"]
        nearest = max(queued, key=lambda j: (-j.priority, j.id)) if queued else ahead[0]
        why = f"behind job {nearest.id}"
    else:
        why = f"next in pool {job.pool}"
    return f"{why} ({message})" if message else why
