"""mlxd machines list: the hosts whose daemons share this catalog."""

from __future__ import annotations

from datetime import UTC, datetime

import click

from mlxd.cli.context import catalog_errors, get_paths, get_reader
from mlxd.cli.output import emit, human_bytes, output_options, when


@click.group()
def machines():
    """The machines whose daemons share this catalog and queue."""


# A machine row as the list shows it (a CSV of none still has this header).
FIELDS = (
    *("host_id", "state", "pools", "heartbeat_at", "heartbeat_age_s", "running_jobs"),
    *("workers", "hostname", "chip", "ram_bytes", "memory_budget_bytes", "backend"),
    *("mlx_version", "mlxd_version", "daemon_pid"),
)


@machines.command("list")
@output_options()
@catalog_errors
def list_(fmt: str):
    """Each host: its facts, pools, last heartbeat and running jobs."""
    from mlxd.daemon import hosts
    from mlxd.vocab import settings

    reader = get_reader()
    local = hosts.local_daemon_running(get_paths())
    lease_s = settings.LEASE_TIMEOUT_S.get()
    running: dict[str, list[int]] = {}
    for job in reader.jobs(["running"]):
        running.setdefault(job.host or "?", []).append(job.id)
    now = datetime.now(UTC)
    rows = []
    for m in reader.machines():
        beat = m.heartbeat_at if m.heartbeat_at.tzinfo else m.heartbeat_at.replace(tzinfo=UTC)
        age = (now - beat).total_seconds()
        state = hosts.machine_state(m, lease_s, local_daemon=local, now=now)
        facts = m.facts or {}
        values = (
            *(m.host_id, state, m.pools, m.heartbeat_at, round(age, 1)),
            *(running.get(m.host_id, []), m.workers, m.hostname),
            facts.get("chip") or facts.get("cpu"),
            *(facts.get(k) for k in ("ram_bytes", "memory_budget_bytes", "backend")),
            *(facts.get("mlx_version"), m.mlxd_version, m.daemon_pid),
        )
        rows.append(dict(zip(FIELDS, values, strict=True)))
    emit(
        fmt,
        rows,
        fields=FIELDS,
        headers=("HOST", "STATE", "POOLS", "HEARTBEAT", "RUNNING", "CHIP", "RAM", "BACKEND"),
        table=lambda r: (
            r["host_id"],
            r["state"],
            ",".join(r["pools"]),
            when(r["heartbeat_at"]),
            ",".join(map(str, r["running_jobs"])) or "-",
            r["chip"] or "",
            human_bytes(r["ram_bytes"]),
            r["backend"] or "",
        ),
        empty="No machines yet: a daemon registers its machine when it starts.",
    )
