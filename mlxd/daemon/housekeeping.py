"""The daemon's housekeeper: a thread that, every few seconds while the daemon lives,

- recovers running jobs nobody supervises any more (their daemon or CLI died, or a worker
  lost them), not only at start-up;
- replaces a spare child that died or was stopped;
- enqueues queued catalog rows that huey does not hold (a submit whose second write failed).

Each pass is guarded: a locked catalog delays a pass, it never stops the thread.
"""

from __future__ import annotations

import logging
import threading

from mlxd.catalog.store import Store
from mlxd.config import Paths
from mlxd.daemon import hosts
from mlxd.daemon.control import alive_file
from mlxd.daemon.recovery import reconcile_queue, recover_orphaned_jobs
from mlxd.daemon.retry import short_error, transient
from mlxd.daemon.runner import Runner
from mlxd.vocab import settings

log = logging.getLogger("mlxd.housekeeping")
# Queued rows younger than this are left to the CLI that is still enqueueing them.
RECONCILE_GRACE_S = 2.0


class Housekeeper(threading.Thread):
    def __init__(self, store: Store, paths: Paths, runner: Runner, stop: threading.Event):
        super().__init__(name="mlxd-housekeeper", daemon=True)
        self.store, self.paths, self.runner, self.stop = store, paths, runner, stop
        self.interval = settings.HOUSEKEEPING_S.get()
        self.workers = 1
        self._in_use_written: int | None = None  # the memory in use the machine row says

    def run(self) -> None:
        failing = 0  # passes in a row that found the catalog unreachable
        while not self.stop.wait(self.interval):
            try:
                self.tick()
            except Exception as e:  # noqa: BLE001  next time, then
                if not transient(e):
                    log.exception("housekeeping pass failed")
                    continue
                failing += 1
                if failing == 1 or failing % 30 == 0:  # one line, not a traceback per pass
                    log.warning(
                        "housekeeping: the catalog is unreachable (%s); trying again",
                        short_error(e),
                    )
            else:
                if failing:
                    log.info("housekeeping: the catalog answers again")
                failing = 0

    def tick(self) -> None:
        alive_file(self.paths).touch()
        # first: other hosts judge by it (with the memory its jobs hold, when that changed)
        in_use = self.runner.reserved_bytes()
        changed = {"memory_in_use_bytes": in_use} if in_use != self._in_use_written else None
        hosts.heartbeat(self.store, workers=self.workers, fact_updates=changed)
        self._in_use_written = in_use
        self.runner.spare.check(self.stop)
        recover_orphaned_jobs(self.store, self.paths, supervised=self.runner.active_jobs)
        enqueued = reconcile_queue(self.store, self.paths, grace_s=RECONCILE_GRACE_S)
        if enqueued:
            log.warning("queued job(s) %s were not in the queue; enqueued them", enqueued)
