"""mlxd machines list: the hosts whose daemons share this catalog."""

from __future__ import annotations

from datetime import UTC, datetime

import click

from mlxd.cli.context import catalog_errors, get_reader
from mlxd.cli.output import emit, human_bytes, output_options, when


@click.group()
def machines():
    """The machines whose daemons share this catalog and queue."""


@machines.command("list")
@output_options()
@catalog_errors
def list_(fmt: str):
    """Each host: its facts, pools, last heartbeat and running jobs."""
    from mlxd.daemon import settings

    reader = get_reader()
    lease_s = settings.lease_timeout_s()
    running: dict[str, list[int]] = {}
    for job in reader.jobs(["running"]):
        running.setdefault(job.host or "?", []).append(job.id)
    now = datetime.now(UTC)
    rows = []
    for m in reader.machines():
        beat = m.heartbeat_at if m.heartbeat_at.tzinfo else m.heartbeat_at.replace(tzinfo=UTC)
        age = (now - beat).total_seconds()
        state = "stopped" if m.stopped_at else ("up" if age < lease_s else "lost")
        facts = m.facts or {}
        rows.append(
            {
                "host_id": m.host_id,
                "state": state,
                "pools": m.pools,
                "heartbeat_at": m.heartbeat_at,
                "heartbeat_age_s": round(age, 1),
                "running_jobs": running.get(m.host_id, []),
                "workers": m.workers,
                "hostname": m.hostname,
                "chip": facts.get("chip") or facts.get("cpu"),
                "ram_bytes": facts.get("ram_bytes"),
                "memory_budget_bytes": facts.get("memory_budget_bytes"),
                "backend": facts.get("backend"),
                "mlx_version": facts.get("mlx_version"),
                "mlxd_version": m.mlxd_version,
                "daemon_pid": m.daemon_pid,
            }
        )
    emit(
        fmt,
        rows,
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
