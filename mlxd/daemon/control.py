"""Status, start and stop of a home's daemon, as the CLI needs them.

Only stdlib, and psutil when a daemon runs: ``mlxd daemon status`` and every submit import this module, and
must not pay for huey's consumer, the Runner or sqlmodel.
"""

from __future__ import annotations

import fcntl
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass

from mlxd.config import Paths
from mlxd.daemon.webserver import ServeOptions, stop_leftover
from mlxd.vocab import settings


class DaemonError(Exception):
    pass


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
        import psutil  # only with a daemon to ask about: `jobs list` without one stays quick

        try:
            pid = int(paths.pidfile.read_text().split()[0])
            started = psutil.Process(pid).create_time()
        except (OSError, ValueError, IndexError, psutil.Error):
            pass
    return DaemonStatus(running=running, pid=pid, home=str(paths.home), started_at=started)


def start_background(
    paths: Paths,
    workers: int = 1,
    timeout_s: float = 30.0,
    digest: str | None = None,
    serve: ServeOptions | None = None,
) -> int:
    """Start a detached daemon and wait until it is ready (not its server: see
    ``webserver.wait_ready``); returns its pid."""
    st = status(paths)
    if st.running:
        raise DaemonError(f"the daemon is already running (pid {st.pid})")
    paths.ensure()
    paths.pidfile.unlink(missing_ok=True)
    stop_leftover(paths)  # no daemon runs: a server still recorded is a killed one's
    with open(paths.daemon_log, "a") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "mlxd", "daemon", "start", "--foreground"]
            + ["--workers", str(workers)]
            + (["--digest", digest] if digest else [])
            + (serve.daemon_args() if serve else []),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=out,
            start_new_session=True,  # survives the terminal that started it
            env=dict(os.environ, **{settings.HOME.name: str(paths.home)}),
        )
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            other = status(paths)
            if other.running:  # another start won the race
                raise DaemonError(f"the daemon is already running (pid {other.pid})")
            raise DaemonError(f"the daemon exited at start ({last_log_line(paths)})")
        if pidfile_pid(paths) == proc.pid:
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
    import psutil

    os.kill(st.pid, signal.SIGTERM)
    try:
        psutil.Process(st.pid).wait(timeout_s)
    except psutil.NoSuchProcess:
        pass
    except psutil.TimeoutExpired:
        os.kill(st.pid, signal.SIGKILL)
    stop_leftover(paths)  # the team server of a daemon that had to be killed
    return st.pid


def alive_file(paths: Paths):
    """Touched by the daemon's housekeeper on every pass: a lock alone does not prove life."""
    return paths.home / "daemon.alive"


def cancel_file(paths: Paths, job_id: int):
    """``jobs cancel`` drops this file as well as writing the catalog: the supervisor sees it
    even while someone holds the catalog's write lock."""
    return paths.home / "cancel" / str(job_id)


def request_cancel_file(paths: Paths, job_id: int) -> None:
    path = cancel_file(paths, job_id)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch()


def pidfile_pid(paths: Paths) -> int | None:
    try:
        return int(paths.pidfile.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def last_log_line(paths: Paths) -> str:
    try:
        lines = [ln for ln in paths.daemon_log.read_text().splitlines() if ln.strip()]
    except OSError:
        return "no log"
    return lines[-1] if lines else "no log"
