"""Many daemons on one catalog: who a daemon is (host id), which pools it serves, whether
another host is still alive (where a job can go is ``mlxd/scheduling/placement.py``).

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
import socket
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from mlxd.config import host_id  # noqa: F401  (hosts.host_id is the usual name)
from mlxd.scheduling.placement import DEFAULT_POOL, host_pool, live_machines
from mlxd.vocab import settings


def joined_pools() -> list[str]:
    """The pools this daemon serves (MLXD_POOLS, comma separated; default ``default``)."""
    return settings.POOLS.get() or [DEFAULT_POOL]


def served_pools() -> list[str]:
    return [*joined_pools(), host_pool(host_id())]


def shared_models_root() -> Path | None:
    value = settings.SHARED_MODELS.get()
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
    from mlxd.hub.environment import environment
    from mlxd.scheduling.admission import memory_budget_bytes
    from mlxd.system.sysinfo import machine_facts
    from mlxd.vocab import settings

    facts = machine_facts()
    facts["memory_budget_bytes"] = memory_budget_bytes()
    facts["memory_in_use_bytes"] = 0  # the housekeeper updates it as jobs start and end
    # This daemon's lease: others judge its machine row by it, not by their own setting.
    facts["lease_s"] = settings.LEASE_TIMEOUT_S.get()
    # The hub environment this daemon's pulls and pushes use (token presence only, never
    # the token): a CLI with another HF_ENDPOINT or token says so at submit.
    facts["hub"] = environment().to_dict()
    return facts


def heartbeat(
    store,
    *,
    workers: int,
    facts: dict[str, Any] | None = None,
    fact_updates: dict[str, Any] | None = None,
    start=False,
) -> None:
    """Write this daemon's machine row (its sign of life); ``fact_updates`` change some of
    its facts (the memory its running jobs hold) and keep the others."""
    from mlxd import __version__

    values: dict[str, Any] = {"daemon_pid": os.getpid(), "workers": workers}
    if start:
        values |= {
            "started_at": datetime.now(UTC),
            "hostname": socket.gethostname(),
            "mlxd_version": __version__,
        }
    kwargs = {"facts": facts} if facts is not None else {}
    if fact_updates:
        kwargs["fact_updates"] = fact_updates
    store.machine_heartbeat(host_id(), pools=joined_pools(), **kwargs, **values)


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


def local_daemon_running(paths) -> bool | None:
    """On one machine (SQLite) whether its daemon holds its lock: the truth whatever its
    last heartbeat says (a killed daemon leaves a fresh one). None on a shared catalog
    (PostgreSQL), where the heartbeats are the truth."""
    from mlxd.catalog import backend
    from mlxd.daemon.control import status

    return None if backend.database(paths).is_postgres else status(paths).running


def machines_as_seen(paths, reader) -> list:
    """The catalog's machine rows as every reader judges them (``seen_machines`` with the
    local daemon's lock): ``jobs list``'s wait reasons, the dashboard's queue."""
    return seen_machines(reader.machines(), local_daemon=local_daemon_running(paths))


def machine_state(m, lease_s: float, *, local_daemon: bool | None = None, now=None) -> str:
    """A machine row's state as ``machines list`` and the dashboard show it: stopped (its
    daemon said so, or the local daemon's lock is free), up (a heartbeat within the lease)
    or lost."""
    if m.stopped_at or local_daemon is False:
        return "stopped"
    beat = m.heartbeat_at if m.heartbeat_at.tzinfo else m.heartbeat_at.replace(tzinfo=UTC)
    age = ((now or datetime.now(UTC)) - beat).total_seconds()
    return "up" if age < lease_s else "lost"


def wait_reasons(paths, reader, jobs) -> dict[int, str]:
    """For each queued job of ``jobs``: why it has not started (``placement.wait_reason``),
    from the catalog, the same words on every machine and through every reader."""
    queued = [j for j in jobs if j.status == "queued"]
    if not queued:
        return {}
    from mlxd.scheduling.placement import wait_reason

    machines, pending = machines_as_seen(paths, reader), reader.jobs(["queued", "running"])
    lease = settings.LEASE_TIMEOUT_S.get()
    return {j.id: wait_reason(j, machines, lease, pending) for j in queued}
