"""The spare child: one job process started ahead, with mlx and mlx_lm already imported.

The next job starts at once instead of paying ~1 s of imports. Each spare serves one job,
so per-process figures stay per job. A spare that died or was stopped (SIGSTOP) is never
handed a job: it is dismissed and replaced, and the daemon's housekeeping checks it too.
"""

from __future__ import annotations

import logging
import subprocess
import sys
import threading
from collections.abc import Callable

import psutil

from mlxd.config import Paths

log = logging.getLogger("mlxd.spare")

CHILD_CMD = [sys.executable, "-m", "mlxd.daemon.child"]
KILL_GRACE_S = 3.0


def usable(proc: subprocess.Popen) -> bool:
    """Running and not stopped: a stopped process would take a job and never start it."""
    if proc.poll() is not None:
        return False
    try:
        return psutil.Process(proc.pid).status() not in (
            psutil.STATUS_STOPPED,
            psutil.STATUS_TRACING_STOP,
            psutil.STATUS_ZOMBIE,
        )
    except psutil.Error:
        return False


def terminate(proc: subprocess.Popen, grace_s: float = KILL_GRACE_S) -> None:
    """SIGTERM, then SIGKILL: a long C call inside MLX may not notice a polite request.

    A stopped process never sees SIGTERM: it gets SIGKILL at once.
    """
    if proc.poll() is not None:
        return
    try:
        stopped = psutil.Process(proc.pid).status() == psutil.STATUS_STOPPED
    except psutil.Error:
        stopped = False
    if stopped:
        proc.kill()
        proc.wait()
        return
    proc.terminate()
    try:
        proc.wait(grace_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def dismiss(proc: subprocess.Popen) -> None:
    """End a child that has no job (it may still be importing: do not wait for EOF)."""
    try:
        if proc.stdin and not proc.stdin.closed:
            proc.stdin.close()
    except OSError:
        pass
    terminate(proc)
    if proc.stdout:
        proc.stdout.close()


class Spare:
    """At most one waiting child; thread-safe."""

    def __init__(self, paths: Paths, env: Callable[[], dict[str, str]], enabled: bool):
        self.paths = paths
        self.env = env
        self.enabled = enabled
        self._proc: subprocess.Popen | None = None
        self._lock = threading.Lock()
        self._closed = False

    def start(self, stopping: threading.Event | None = None) -> None:
        """Start a spare unless one is waiting (or spares are off, or we are closing)."""
        if not self.enabled:
            return
        with self._lock:
            if self._closed or (stopping is not None and stopping.is_set()):
                return
            if self._proc is not None and usable(self._proc):
                return
            if self._proc is not None:
                dismiss(self._proc)
            self.paths.ensure()
            # Until it has a job, what the spare prints (import warnings) goes to the daemon log.
            with open(self.paths.daemon_log, "a") as out:
                self._proc = subprocess.Popen(
                    [*CHILD_CMD, "--preload"],
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    stderr=out,
                    env=self.env(),
                    text=True,
                )
            log.info("spare child %s started", self._proc.pid)

    def take(self) -> subprocess.Popen | None:
        """The waiting spare, if it can take a job; a dead or stopped one is dismissed."""
        with self._lock:
            proc, self._proc = self._proc, None
        if proc is not None and not usable(proc):
            log.warning("spare child %s is unusable (exited or stopped); dismissed", proc.pid)
            dismiss(proc)
            return None
        return proc

    def check(self, stopping: threading.Event | None = None) -> None:
        """Housekeeping: replace a spare that died or was stopped (and reap it)."""
        with self._lock:
            proc = self._proc
            if proc is None or usable(proc):
                return
            self._proc = None
        log.warning("spare child %s died or was stopped; replacing it", proc.pid)
        dismiss(proc)
        self.start(stopping)

    def close(self) -> None:
        """Stop the spare; no new one is started after this."""
        with self._lock:
            self._closed = True
            proc, self._proc = self._proc, None
        if proc is not None:
            dismiss(proc)

    @property
    def pid(self) -> int | None:
        proc = self._proc
        return proc.pid if proc is not None else None
