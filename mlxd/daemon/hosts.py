"""Many daemons on one catalog: who a daemon is (host id), which pools it serves, whether
another host is still alive, and where a job can go.

- The host id is the hostname, or ``mlxd daemon start --host-id NAME`` (several daemons on
  one machine, as the tests run them). It is what ``job.host`` and ``model.host`` record.
- A pool is a huey queue name; a daemon serves the pools it joined (``--pool``, default
  ``default``) and its own host pool ``@HOST``, where jobs that read a model only that host
  holds are sent.
- Each daemon writes its ``machine`` row when it starts and at every housekeeping pass; a
  host whose row is older than the lease timeout (or says it stopped) is dead, and any live
  daemon takes back its running jobs whose own lease ran out too (``Store.take_back``: one
  winner; the lost host's later writes for that attempt are fenced out).
"""

from __future__ import annotations

import os
import re
import socket
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from mlxd.config import ENV_HOST_ID, host_id  # noqa: F401  (hosts.host_id is the usual name)

ENV_POOLS = "MLXD_POOLS"
ENV_SHARED_MODELS = "MLXD_SHARED_MODELS"
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


def joined_pools() -> list[str]:
    """The pools this daemon serves (MLXD_POOLS, comma separated; default ``default``)."""
    pools = [p.strip() for p in os.environ.get(ENV_POOLS, "").split(",") if p.strip()]
    return list(dict.fromkeys(pools)) or [DEFAULT_POOL]


def served_pools() -> list[str]:
    return [*joined_pools(), host_pool(host_id())]


def shared_models_root() -> Path | None:
    value = os.environ.get(ENV_SHARED_MODELS)
    return Path(value).expanduser().resolve() if value else None


def model_host_for(path: str | os.PathLike) -> str | None:
    """The host to record for a model folder: None on the shared volume (every host sees
    it), else this host."""
    shared = shared_models_root()
    if shared is not None:
        try:
            Path(path).resolve().relative_to(shared)
            return None
        except ValueError:
            pass
    return host_id()


def machine_facts_for_row() -> dict[str, Any]:
    from mlxd.daemon.admission import memory_budget_bytes
    from mlxd.daemon.settings import lease_timeout_s
    from mlxd.hub.environment import environment
    from mlxd.system.sysinfo import machine_facts

    facts = machine_facts()
    facts["memory_budget_bytes"] = memory_budget_bytes()
    # This daemon's lease: others judge its machine row by it, not by their own setting.
    facts["lease_s"] = lease_timeout_s()
    # The hub environment this daemon's pulls and pushes use (token presence only, never
    # the token): a CLI with another HF_ENDPOINT or token says so at submit.
    facts["hub"] = environment().to_dict()
    return facts


def heartbeat(store, *, workers: int, facts: dict[str, Any] | None = None, start=False) -> None:
    """Write this daemon's machine row (its sign of life)."""
    from mlxd import __version__

    values: dict[str, Any] = {"daemon_pid": os.getpid(), "workers": workers}
    if start:
        values |= {
            "started_at": _now(),
            "hostname": socket.gethostname(),
            "mlxd_version": __version__,
        }
    kwargs = {"facts": facts} if facts is not None else {}
    store.machine_heartbeat(host_id(), pools=joined_pools(), **kwargs, **values)


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


def host_alive(machines_by_id: dict[str, Any], host: str, lease_s: float) -> bool:
    m = machines_by_id.get(host)
    return m is not None and bool(live_machines([m], lease_s))


def job_host_dead(job, machines_by_id: dict[str, Any], lease_s: float, heartbeat_s: float) -> bool:
    """Whether the host running ``job`` has stopped. A job whose own lease is fresh is alive,
    whatever its machine row says (a CLI running a job in the foreground on a machine whose
    daemon stopped renews it like a daemon does); a job whose lease ran out is dead unless
    its host's machine row still beats (a daemon whose job rows cannot be written now). The
    runner renews a job's lease every ``min(heartbeat_s, lease_s / 3)`` (runner.py
    ``job_heartbeat_s``): three missed beats, or the lease, whichever is longer."""
    beat = job.heartbeat_at or job.started_at
    # Judged by the lease its holder promised: a CLI with a longer lease than this daemon's
    # renews less often, and is alive for as long as it said.
    lease_s = getattr(job, "lease_s", None) or lease_s
    if beat is not None:
        if beat.tzinfo is None:
            beat = beat.replace(tzinfo=UTC)
        stale_s = max(lease_s, 3 * min(heartbeat_s, lease_s / 3))
        if (datetime.now(UTC) - beat).total_seconds() <= stale_s:
            return False
    if job.host in machines_by_id:
        return not host_alive(machines_by_id, job.host, lease_s)
    return True


def place(
    machines, lease_s: float, memory_bytes: int | None, pool: str | None
) -> tuple[str, str | None]:
    """(pool, note): where a job goes. ``pool`` given: there, with a note when no live
    machine serves it or none of them has the memory. Not given: the default pool if a live
    machine there fits the job, else the first pool that has one; raises ValueError, saying
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
        from mlxd.daemon.reasons import human_bytes

        best = max(machines, key=lambda m: (m.facts or {}).get("memory_budget_bytes") or 0)
        budget = (best.facts or {}).get("memory_budget_bytes") or 0
        raise ValueError(
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


def seen_machines(machines, *, local_daemon: bool | None = None) -> list:
    """``machines`` as the reasons below judge them. ``local_daemon`` False (one machine,
    SQLite, and its daemon's lock is free) marks every one stopped: a killed daemon leaves a
    fresh heartbeat behind."""
    if local_daemon is not False:
        return list(machines)
    from types import SimpleNamespace

    return [
        SimpleNamespace(
            host_id=m.host_id,
            pools=m.pools,
            heartbeat_at=m.heartbeat_at,
            stopped_at=m.stopped_at or m.heartbeat_at,
        )
        for m in machines
    ]


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
