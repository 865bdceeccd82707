"""The team server a daemon runs beside itself (``mlxd daemon start --serve ADDR``).

The server (``mlxd serve``) is a process of its own: a slow page or a crash in it never
touches the daemon's workers, and its memory is its own. The daemon starts it once its own
start-up is done, starts it again if it dies (after a pause that grows, so a port in use is
not hammered), and stops it when it stops. ``daemon install --serve`` puts the same command
line in the login service, so the daemon starts the server there too, and the service
manager's own clean-up (systemd's control group, launchd's process group) covers a daemon
killed outright; without one, the server sees its daemon gone (its parent changes) and stops
within a second. ``server.json`` in MLXD_HOME says where the server listens (what ``daemon
status`` prints) and which process it is, so a later start or ``daemon stop`` ends one that
a killed daemon left behind.

Stdlib and psutil only: ``daemon status`` imports it.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import asdict, dataclass

from mlxd.config import Paths
from mlxd.vocab import settings

log = logging.getLogger("mlxd.daemon.webserver")

FIRST_PAUSE_S = 1.0  # before starting a server that died again; doubles up to MAX_PAUSE_S
MAX_PAUSE_S = 300.0


@dataclass(frozen=True)
class ServeOptions:
    """What ``mlxd serve`` runs with: the address and the flags passed on to it."""

    bind: str
    tls_cert: str | None = None
    tls_key: str | None = None
    public_read: bool = False
    insecure_http: bool = False

    def serve_args(self) -> list[str]:
        """The options of ``mlxd serve``; ``daemon_args`` the same for ``daemon start``."""
        out = ["--bind", self.bind]
        if self.tls_cert:
            out += ["--tls-cert", self.tls_cert]
        if self.tls_key:
            out += ["--tls-key", self.tls_key]
        if self.public_read:
            out.append("--public-read")
        if self.insecure_http:
            out.append("--insecure-http")
        return out

    def daemon_args(self) -> list[str]:
        return ["--serve", self.bind, *self.serve_args()[2:]]

    @property
    def url(self) -> str:
        return f"{'https' if self.tls_cert else 'http'}://{self.bind}"


def parse_bind(value: str) -> tuple[str, int]:
    """HOST:PORT ([::1]:PORT for IPv6) -> (host, port); ValueError with the reason."""
    host, sep, port = value.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"'{value}' is not HOST:PORT (e.g. 127.0.0.1:8765)")
    return host, int(port)


def serve_command(options: ServeOptions) -> list[str]:
    return [sys.executable, "-m", "mlxd", "serve", *options.serve_args()]


class ServerProcess:
    """The daemon's server child: started, watched (restarted when it dies), stopped."""

    def __init__(self, paths: Paths, options: ServeOptions):
        self.paths, self.options = paths, options
        self.proc: subprocess.Popen | None = None
        self.pause_s = FIRST_PAUSE_S
        self.next_start = 0.0

    def start(self) -> None:
        stop_leftover(self.paths)
        self.paths.logs.mkdir(parents=True, exist_ok=True)
        with open(self.paths.server_log, "a") as out:
            self.proc = subprocess.Popen(
                serve_command(self.options),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=out,
                env=dict(
                    os.environ,
                    **{
                        settings.HOME.name: str(self.paths.home),
                        # It stops when this daemon is gone, a kill -9 included.
                        settings.SERVER_PARENT_PID.name: str(os.getpid()),
                    },
                ),
            )
        record = {"pid": self.proc.pid, "started_at": _create_time(self.proc.pid)}
        record |= {"url": self.options.url, **asdict(self.options)}
        _write_record(self.paths, record)
        log.info("team server started (pid %s) at %s", self.proc.pid, self.options.url)

    def check(self) -> None:
        """Start the server again if it died (not more often than the growing pause)."""
        if self.proc is None or self.proc.poll() is None:
            return
        now = time.monotonic()
        if self.next_start == 0.0:
            log.warning(
                "team server (pid %s) exited with status %s (%s); starting it again in %g s",
                self.proc.pid,
                self.proc.returncode,
                last_log_line(self.paths),
                self.pause_s,
            )
            self.next_start = now + self.pause_s
            self.pause_s = min(self.pause_s * 2, MAX_PAUSE_S)
        elif now >= self.next_start:
            self.next_start = 0.0
            self.start()

    def stop(self, timeout_s: float = 10.0) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
            log.info("team server (pid %s) stopped", self.proc.pid)
        record = read_record(self.paths)
        if self.proc is not None and record and record.get("pid") == self.proc.pid:
            self.paths.server_file.unlink(missing_ok=True)


def read_record(paths: Paths) -> dict | None:
    try:
        record = json.loads(paths.server_file.read_text())
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None


def _write_record(paths: Paths, record: dict) -> None:
    tmp = paths.server_file.with_suffix(".tmp")
    tmp.write_text(json.dumps(record) + "\n")
    tmp.replace(paths.server_file)


def _create_time(pid: int) -> float | None:
    import psutil

    try:
        return psutil.Process(pid).create_time()
    except psutil.Error:
        return None


def server_status(paths: Paths) -> dict | None:
    """The server a daemon started (``server.json``) and whether it runs: None if none was."""
    record = read_record(paths)
    if record is None:
        return None
    pid = record.get("pid")
    running = isinstance(pid, int) and _create_time(pid) == record.get("started_at")
    return {
        "url": record.get("url"),
        "bind": record.get("bind"),
        "pid": pid,
        "running": bool(running) and record.get("started_at") is not None,
    }


def stop_leftover(paths: Paths, timeout_s: float = 10.0) -> int | None:
    """End the server ``server.json`` names if it still runs (its daemon was killed);
    returns its pid, or None."""
    st = server_status(paths)
    paths.server_file.unlink(missing_ok=True)
    if not st or not st["running"]:
        return None
    import psutil

    pid = st["pid"]
    try:
        os.kill(pid, signal.SIGTERM)
        psutil.Process(pid).wait(timeout_s)
    except (ProcessLookupError, psutil.NoSuchProcess):
        pass
    except psutil.TimeoutExpired:
        os.kill(pid, signal.SIGKILL)
    return pid


def wait_ready(paths: Paths, options: ServeOptions, timeout_s: float = 30.0) -> str:
    """Wait until the daemon's server accepts connections; its URL. RuntimeError (one line)
    if it exits first or does not answer in time."""
    host, port = parse_bind(options.bind)
    if host in ("0.0.0.0", "::"):
        host = "127.0.0.1" if host == "0.0.0.0" else "::1"
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        st = server_status(paths)
        if st is not None:
            if not st["running"]:
                raise RuntimeError(f"the team server exited at start ({last_log_line(paths)})")
            try:
                with socket.create_connection((host, port), timeout=0.5):
                    return options.url
            except OSError:
                pass
        time.sleep(0.1)
    raise RuntimeError(
        f"the team server did not answer at {options.url} within {timeout_s:g} s; "
        f"see {paths.server_log}"
    )


def last_log_line(paths: Paths) -> str:
    try:
        lines = [ln for ln in paths.server_log.read_text().splitlines() if ln.strip()]
    except OSError:
        return "no log"
    return lines[-1].strip() if lines else "no log"
