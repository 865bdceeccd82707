"""The daemon process: single-instance lock, recovery, the huey consumer, housekeeping.

``mlxd daemon start --foreground`` runs :func:`run_daemon` in the current process (what
launchd or systemd want); plain ``mlxd daemon start`` starts that same command detached
(``control.py``).

Signals are the daemon's own, not huey's: SIGTERM or SIGINT stop it gently (the running job is
stopped and queued again; a second signal while stopping changes nothing), SIGHUP stops it the
same way and starts it again in the same process (no spare child is left behind).
"""

from __future__ import annotations

import fcntl
import logging
import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

from huey.consumer import Consumer

from mlxd.catalog.store import FencedOut, Store
from mlxd.config import CONFIG_FILE, Paths, record_host_id, recorded_host_id
from mlxd.daemon import hosts, queue
from mlxd.daemon.control import DaemonError, alive_file, pidfile_pid
from mlxd.daemon.housekeeping import Housekeeper
from mlxd.daemon.recovery import recover
from mlxd.daemon.retry import GaveUp, short_error, transient
from mlxd.daemon.runner import INTERNAL_ERROR, Runner
from mlxd.daemon.webserver import ServeOptions, ServerProcess
from mlxd.scheduling.gate import fail_dependents
from mlxd.scheduling.queue import set_handler, wake
from mlxd.system.permissions import apply_umask, share_files
from mlxd.vocab import settings

log = logging.getLogger("mlxd.daemon")
HEALTH_CHECK_S = 10.0


class _Consumer(Consumer):
    """huey's consumer without its signal handlers: the daemon's own stay installed the
    whole time (a SIGHUP while the consumers start is not lost to huey's handler)."""

    def _set_signal_handlers(self) -> None:
        pass


SLOT_WAIT_S = 0.2  # how often a busy daemon's idle consumers look for a free slot


class Slots:
    """The daemon's job slots (``--workers``), shared by the consumers of all its pools.

    A consumer's worker takes a task from its queue only while a slot is free
    (:meth:`gate` wraps the huey's ``dequeue``): a busy daemon leaves its pools' tasks
    where another daemon can take them, instead of taking one, finding no slot and putting
    it back, over and over. Two workers may still both see the last slot free; the loser
    waits briefly and puts its task back."""

    def __init__(self, n: int):
        self.n, self.used = n, 0
        self._cond = threading.Condition()

    def acquire(self, timeout: float) -> bool:
        with self._cond:
            if not self._cond.wait_for(lambda: self.used < self.n, timeout):
                return False
            self.used += 1
            return True

    def release(self) -> None:
        with self._cond:
            self.used -= 1
            self._cond.notify()

    def gate(self, dequeue: Callable[[], Any]) -> Callable[[], Any]:
        def gated():
            if self.used >= self.n:
                time.sleep(SLOT_WAIT_S)
                return None
            return dequeue()

        return gated


def make_handler(
    runner: Runner, paths: Paths | None = None, workers: int = 1, slots: Slots | None = None
):
    """The huey task's body (runs in a worker thread of the daemon).

    A daemon serving several pools has a consumer per pool; ``workers`` (or ``slots``) bounds
    the jobs it runs at once across them. A job that finds every slot busy goes back to its
    pool, where another daemon may take it."""
    slots = slots or Slots(workers)

    def handle_job(job_id: int) -> None:
        if not slots.acquire(timeout=0.5):
            if paths is not None:
                _enqueue_job(paths, runner.store, job_id)
            return
        try:
            _handle(job_id)
        finally:
            slots.release()

    def _handle(job_id: int) -> None:
        try:
            outcome = runner.handle(job_id)
            if outcome and outcome.status != "discarded":  # (the runner said it in one line)
                detail = f": {outcome.error}" if outcome.error else ""
                log.info("job %s %s%s", job_id, outcome.status, detail)
        except GaveUp:
            log.warning("job %s: the daemon stopped while the catalog was locked", job_id)
        except Exception as e:  # the daemon survives any single job
            if transient(e):
                # The database went away (a restart, a network blip): not the job's fault.
                # Its row still says queued (or running, unsupervised): the housekeeper
                # queues it again once the catalog answers.
                log.warning(
                    "job %s: the catalog is unreachable (%s); it runs later", job_id, short_error(e)
                )
                return
            log.exception("job %s: unexpected error in the supervisor", job_id)
            try:
                # Before its claim (a running attempt's own errors end it in the runner,
                # fenced): fail it only while it is still queued, not a run another host
                # claimed meanwhile.
                job = runner.store.get_job(job_id)
                if job.status == "queued":
                    runner.store.finish_job(job_id, "failed", error=INTERNAL_ERROR, fence=job)
                    fail_dependents(runner.store, job_id)
            except FencedOut:
                pass  # claimed meanwhile: its runner answers for it
            except Exception:
                # The housekeeper finds the job without a live child and recovers it.
                log.exception("could not mark job %s failed", job_id)

    return handle_job


class _Signals:
    """What the daemon was asked to do; set from signal handlers, read by the main loop."""

    def __init__(self):
        self.stop = threading.Event()
        self.restart = False

    def install(self) -> None:
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._on_stop)
        signal.signal(signal.SIGHUP, self._on_restart)

    def _on_stop(self, signum, _frame) -> None:
        if self.stop.is_set():
            log.info("received %s again; already stopping", signal.Signals(signum).name)
        self.stop.set()

    def _on_restart(self, _signum, _frame) -> None:
        if not self.stop.is_set():
            self.restart = True
        self.stop.set()


def run_daemon(
    paths: Paths,
    workers: int = 1,
    digest: str | None = None,
    serve: ServeOptions | None = None,
) -> None:
    """Run the daemon in this process until SIGTERM/SIGINT (SIGHUP: restart); with
    ``serve``, the team server runs beside it (its own process, stopped with it)."""
    apply_umask(paths.home)  # a group-shared home: files the whole group can use
    paths.ensure()
    lock = _lock(paths)
    _setup_logging(paths)
    moved = queue.check_queue_file(paths)
    if moved:
        log.warning("the queue file was corrupt; moved it to %s and rebuilt it", moved)
    store = Store(paths)
    share_files(paths.home)
    consumers = _consumers(paths, workers, digest)
    consumer = consumers[0]
    slots = Slots(workers)
    for c in consumers:
        c.huey.dequeue = slots.gate(c.huey.dequeue)  # this daemon's instance of each huey
    runner = Runner(
        store,
        paths,
        stop_event=consumer.stop_flag,
        release=lambda job_id: _enqueue_job(paths, store, job_id),
        prewarm=settings.SPARE_CHILD.get(),
    )
    set_handler(make_handler(runner, paths, slots=slots))
    signals = _Signals()
    signals.install()  # before recovery: a stop during it is not lost
    recover(store, paths)
    runner.start_spare()  # the first job after a start gets a warm child too
    housekeeper = Housekeeper(store, paths, runner, stop=consumer.stop_flag)
    housekeeper.workers = workers
    _record_host_id(store, paths)
    hosts.heartbeat(store, workers=workers, facts=hosts.machine_facts_for_row(), start=True)
    alive_file(paths).touch()
    paths.pidfile.write_text(f"{os.getpid()}\n")
    log.info(
        "mlxd daemon started (pid %s, home %s, %s worker(s), host %s, pools %s, %s)",
        os.getpid(),
        paths.home,
        workers,
        hosts.host_id(),
        ",".join(hosts.joined_pools()),
        store.database.display(),
    )
    server = ServerProcess(paths, serve) if serve is not None else None
    try:
        if server is not None:
            server.start()
        _serve(consumers, housekeeper, signals, server)
    finally:
        if server is not None:
            server.stop()
        for c in consumers:
            c.stop_flag.set()
        housekeeper.join()
        runner.close()  # no spare child outlives its daemon
        set_handler(None)
        log.info("mlxd daemon stopped")
        _leave(store, paths, lock)
    if signals.restart:
        logging.shutdown()
        os.execv(sys.executable, sys.orig_argv)


def _lock(paths: Paths):
    """The daemon's lock file, held (DaemonError if another daemon holds it)."""
    lock = open(paths.lockfile, "a+")
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        lock.close()
        raise DaemonError(
            f"the daemon is already running (pid {pidfile_pid(paths) or '?'})"
        ) from None
    return lock


def _consumers(paths: Paths, workers: int, digest: str | None) -> list[_Consumer]:
    """One huey consumer per pool this daemon serves (a pool is a queue name); the first
    one's stop flag is the daemon's."""
    pools = hosts.served_pools()
    if digest:  # a periodic task of the first pool's queue: one digest per daemon
        from mlxd.daemon.digest import schedule_digest

        schedule_digest(queue.consumer_huey(paths, pools[0]), paths, digest)
    return [
        _Consumer(
            queue.consumer_huey(paths, pool),
            workers=workers,
            worker_type="thread",
            # Poll often when idle: a submitted job starts within a few tenths of a second.
            initial_delay=0.05,
            backoff=1.5,
            max_delay=0.2,
            periodic=bool(digest) and i == 0,  # the nightly digest is the only periodic task
        )
        for i, pool in enumerate(pools)
    ]


def _record_host_id(store: Store, paths: Paths) -> None:
    """One host id per machine: the CLI run with this home files what it makes under it
    too, and what it made before (under the hostname, or an older id) follows."""
    before = recorded_host_id(paths) or socket.gethostname()
    if record_host_id(paths, hosts.host_id()):
        log.info("host id %s recorded in %s", hosts.host_id(), paths.home / CONFIG_FILE)
        moved = store.refile_models(before, hosts.host_id(), paths.models)
        if moved:
            log.info("models filed under %s now: %s", hosts.host_id(), ", ".join(moved))


def _serve(
    consumers: list[_Consumer],
    housekeeper: Housekeeper,
    signals: _Signals,
    server: ServerProcess | None = None,
) -> None:
    """Run until a signal says stop; then stop the consumers, gracefully."""
    consumer = consumers[0]
    for c in consumers:
        c.start()
    housekeeper.start()
    last_health = time.monotonic()
    while not signals.stop.wait(0.1):
        if server is not None:
            server.check()  # a server that died is started again
        if time.monotonic() - last_health > HEALTH_CHECK_S:
            last_health = time.monotonic()
            consumer.check_worker_health()  # a worker thread that died is replaced
    log.info("stopping%s", " to restart" if signals.restart else "")
    # Sets the stop flag (the Runner stops and re-queues its jobs) and waits for workers.
    consumer.stop_flag.set()
    for c in consumers:
        c.stop(graceful=True)


def _leave(store: Store, paths: Paths, lock) -> None:
    """The last of a stop: the pid file, this machine's row, the catalog and the lock."""
    if pidfile_pid(paths) == os.getpid():
        paths.pidfile.unlink(missing_ok=True)
    try:
        store.machine_stopped(hosts.host_id())
    except Exception:  # noqa: BLE001  the others then judge by the heartbeat
        log.warning("could not mark this machine stopped in the catalog")
    store.close()
    fcntl.flock(lock, fcntl.LOCK_UN)
    lock.close()
    # Stopped: a late second SIGTERM must not kill the interpreter on its way out (Python
    # resets its own handlers to the default at exit, but leaves ignored signals alone).
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, signal.SIG_IGN)


def _enqueue_job(paths: Paths, store: Store, job_id: int) -> None:
    wake(paths, store.get_job(job_id))


def _setup_logging(paths: Paths) -> None:
    root = logging.getLogger()
    if any(getattr(h, "_mlxd", False) for h in root.handlers):
        return
    handler = logging.FileHandler(paths.daemon_log)
    handler._mlxd = True
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    if sys.stderr.isatty():
        root.addHandler(logging.StreamHandler())
