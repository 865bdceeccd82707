"""The daemon process: single-instance lock, start-up recovery, the huey consumer.

``mlxd daemon start --foreground`` runs :func:`run_daemon` in the current process (what
launchd or systemd want); plain ``mlxd daemon start`` starts that same command detached.
"""

from __future__ import annotations

import fcntl
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass

import psutil
from huey.consumer import Consumer

from mlxd.catalog.store import Store
from mlxd.config import Paths
from mlxd.daemon.liveness import owner_alive
from mlxd.daemon.queue import enqueue, get_huey, pending_job_ids
from mlxd.daemon.runner import Runner

log = logging.getLogger("mlxd.daemon")

_runner: Runner | None = None
# MLXD_SPARE_CHILD=0 turns the pre-started spare child off (it holds ~0.3 GB while it waits).
ENV_SPARE_CHILD = "MLXD_SPARE_CHILD"


class DaemonError(Exception):
    pass


def handle_job(job_id: int) -> None:
    """The huey task's body (runs in a worker thread of the daemon)."""
    if _runner is None:
        raise RuntimeError("run_job executed outside the mlxd daemon")
    try:
        outcome = _runner.handle(job_id)
        if outcome:
            log.info("job %s %s%s", job_id, outcome.status,
                     f": {outcome.error}" if outcome.error else "")  # fmt: skip
    except Exception:  # the daemon survives any single job
        log.exception("job %s: unexpected error in the supervisor", job_id)
        try:
            _runner.store.finish_job(job_id, "failed", error="internal error; see the daemon log")
            _runner.store.fail_dependents(job_id)
        except Exception:
            log.exception("could not mark job %s failed", job_id)


# -- status -----------------------------------------------------------------------------


@dataclass
class DaemonStatus:
    running: bool
    pid: int | None
    home: str
    started_at: float | None = None

    def as_dict(self) -> dict:
        return {
            "running": self.running,
            "pid": self.pid,
            "home": self.home,
            "started_at": self.started_at,
        }


def status(paths: Paths) -> DaemonStatus:
    """Whether a daemon holds this home's lock, and its pid."""
    running = False
    if paths.lockfile.exists():
        with open(paths.lockfile) as f:
            try:
                fcntl.flock(f, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except BlockingIOError:
                running = True
            else:
                fcntl.flock(f, fcntl.LOCK_UN)
    pid = started = None
    if running:
        try:
            pid = int(paths.pidfile.read_text().split()[0])
            started = psutil.Process(pid).create_time()
        except (OSError, ValueError, IndexError, psutil.Error):
            pass
    return DaemonStatus(running=running, pid=pid, home=str(paths.home), started_at=started)


# -- start / stop from the CLI ------------------------------------------------------------


def start_background(paths: Paths, workers: int = 1, timeout_s: float = 30.0) -> int:
    """Start a detached daemon and wait until it is ready; returns its pid."""
    st = status(paths)
    if st.running:
        raise DaemonError(f"the daemon is already running (pid {st.pid})")
    paths.ensure()
    paths.pidfile.unlink(missing_ok=True)
    with open(paths.daemon_log, "a") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "mlxd", "daemon", "start", "--foreground",
             "--workers", str(workers)],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=out,
            start_new_session=True,  # survives the terminal that started it
            env=dict(os.environ, MLXD_HOME=str(paths.home)),
        )  # fmt: skip
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            other = status(paths)
            if other.running:  # another start won the race
                raise DaemonError(f"the daemon is already running (pid {other.pid})")
            raise DaemonError(f"the daemon exited at start ({_last_log_line(paths)})")
        if _pidfile_pid(paths) == proc.pid:
            return proc.pid
        time.sleep(0.05)
    raise DaemonError(
        f"the daemon did not become ready within {timeout_s:g} s; see {paths.daemon_log}"
    )


def stop(paths: Paths, timeout_s: float = 30.0) -> int | None:
    """SIGTERM the daemon and wait for it to exit; returns its pid, or None if none ran."""
    st = status(paths)
    if not st.running or st.pid is None:
        return None
    os.kill(st.pid, signal.SIGTERM)
    try:
        psutil.Process(st.pid).wait(timeout_s)
    except psutil.NoSuchProcess:
        pass
    except psutil.TimeoutExpired:
        os.kill(st.pid, signal.SIGKILL)
    return st.pid


def _pidfile_pid(paths: Paths) -> int | None:
    try:
        return int(paths.pidfile.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def _last_log_line(paths: Paths) -> str:
    try:
        lines = [ln for ln in paths.daemon_log.read_text().splitlines() if ln.strip()]
    except OSError:
        return "no log"
    return lines[-1] if lines else "no log"


# -- the daemon itself --------------------------------------------------------------------


class _Consumer(Consumer):
    def _set_signal_handlers(self):
        super()._set_signal_handlers()
        # Ctrl-C in the foreground stops as gently as SIGTERM: the job is re-queued.
        self._signal_actions[signal.SIGINT] = (False, True)


def run_daemon(paths: Paths, workers: int = 1) -> None:
    """Run the daemon in this process until SIGTERM/SIGINT."""
    global _runner
    paths.ensure()
    lock = open(paths.lockfile, "a+")
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        raise DaemonError(
            f"the daemon is already running (pid {_pidfile_pid(paths) or '?'})"
        ) from None
    _setup_logging(paths)
    store = Store(paths)
    huey = get_huey(str(paths.queue_db))
    consumer = _Consumer(
        huey,
        workers=workers,
        worker_type="thread",
        # Poll the queue often when idle: a submitted job starts within a few tenths of a second.
        initial_delay=0.05,
        backoff=1.5,
        max_delay=0.2,
        periodic=False,
        graceful_signal="TERM",
    )
    _runner = Runner(
        store,
        paths,
        stop_event=consumer.stop_flag,
        release=lambda job_id: _enqueue_job(paths, store, job_id),
        prewarm=os.environ.get(ENV_SPARE_CHILD, "1") != "0",
    )
    recover(store, paths)
    _runner.start_spare()  # the first job after a start gets a warm child too
    paths.pidfile.write_text(f"{os.getpid()}\n")
    log.info(
        "mlxd daemon started (pid %s, home %s, %s worker(s))", os.getpid(), paths.home, workers
    )
    try:
        consumer.run()
    finally:
        _runner.close()  # no spare child outlives its daemon
        log.info("mlxd daemon stopped")
        if _pidfile_pid(paths) == os.getpid():
            paths.pidfile.unlink(missing_ok=True)
        _runner = None
        fcntl.flock(lock, fcntl.LOCK_UN)
        lock.close()


def _enqueue_job(paths: Paths, store: Store, job_id: int) -> None:
    enqueue(paths, job_id, priority=store.get_job(job_id).priority)


def recover(store: Store, paths: Paths) -> None:
    """Start-up recovery: huey delivers at most once, so the catalog is the truth."""
    # 1. Jobs left running by a daemon that is gone (we hold the lock: no other daemon runs;
    #    a job a CLI runs in the foreground, `mlxd models synth`, is left alone).
    keep_partial = set()
    for job in store.list_jobs(["running"]):
        if owner_alive(job) and job.daemon_pid != os.getpid():
            keep_partial.add(f"job-{job.id}-attempt-{job.attempts}")
            continue
        _kill_stale_child(job.pid)
        if job.cancel_requested:
            store.finish_job(job.id, "cancelled", error="cancelled by user")
            store.fail_dependents(job.id)
        elif job.attempts >= job.max_attempts:
            store.finish_job(
                job.id,
                "failed",
                error=f"the daemon stopped during this job {job.attempts} times; giving up",
            )
            store.fail_dependents(job.id)
            log.warning("job %s failed after %s interrupted attempts", job.id, job.attempts)
        else:
            store.requeue_job(
                job.id, f"recovered after the daemon stopped (attempt {job.attempts})"
            )
            log.info("job %s was running when the daemon stopped; queued again", job.id)
    # 2. Partial outputs of jobs that never finished.
    if paths.partial.exists():
        for p in paths.partial.iterdir():
            if p.name in keep_partial:
                continue
            shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)
    # 3. Queued jobs that huey no longer holds.
    pending = pending_job_ids(paths)
    for job in store.list_jobs(["queued"]):
        if job.id in pending:
            continue
        if store.prerequisite_gate(job) == "go":
            enqueue(paths, job.id, priority=job.priority)


def _kill_stale_child(pid: int | None) -> None:
    if not pid:
        return
    try:
        proc = psutil.Process(pid)
        if any("mlxd.daemon.child" in part for part in proc.cmdline()):
            proc.kill()
            proc.wait(5)
    except (psutil.Error, OSError):
        pass


def _setup_logging(paths: Paths) -> None:
    handler = logging.FileHandler(paths.daemon_log)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    if sys.stderr.isatty():
        root.addHandler(logging.StreamHandler())
