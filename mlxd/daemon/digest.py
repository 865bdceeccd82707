"""The daemon's one periodic task: the nightly digest, off unless ``--digest HH:MM``.

huey runs periodic tasks on UTC (the queue is created with ``utc=True``), so the local time
of day is turned into UTC when the daemon starts; a daemon running across a daylight-saving
change writes its digest an hour off until it is restarted.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime

from mlxd.config import Paths

log = logging.getLogger("mlxd.digest")
TASK_NAME = "nightly_digest"


def utc_time_of(hour: int, minute: int, today: datetime | None = None) -> tuple[int, int]:
    """The UTC hour and minute of a local time of day (today's offset)."""
    local = (today or datetime.now()).astimezone()
    at = local.replace(hour=hour, minute=minute, second=0, microsecond=0)
    utc = at.astimezone(UTC)
    return utc.hour, utc.minute


def schedule_digest(huey, paths: Paths, hhmm: str) -> None:
    """Register the digest as a huey periodic task at local time ``hhmm`` each day."""
    from huey import crontab

    from mlxd.reports.digest import parse_hhmm

    hour, minute = utc_time_of(*parse_hhmm(hhmm))

    @huey.periodic_task(crontab(minute=str(minute), hour=str(hour)), name=TASK_NAME)
    def nightly_digest() -> None:
        from mlxd.reports.digest import write_digest

        try:
            files = write_digest(paths)
            log.info("digest written: %s", ", ".join(str(f) for f in files))
        except Exception:  # the daemon outlives a failed digest
            log.exception("writing the digest failed")

    log.info("nightly digest at %s local (%02d:%02d UTC)", hhmm, hour, minute)
