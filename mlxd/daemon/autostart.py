"""Starting the daemon at login: a launchd LaunchAgent on macOS, a systemd user unit on Linux.

An agent in the user's GUI session, not a LaunchDaemon: Metal needs the user session, and
ProcessType=Interactive keeps launchd from throttling the daemon's CPU and I/O (DESIGN.md).
"""

from __future__ import annotations

import os
import platform
import plistlib
import shlex
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from mlxd.config import Paths
from mlxd.daemon.webserver import ServeOptions
from mlxd.vocab import settings

LAUNCHD_LABEL = "dev.mlxd.daemon"
SYSTEMD_UNIT = "mlxd.service"


class AutostartError(Exception):
    pass


@dataclass
class ServicePlan:
    """What installing (or removing) the login service writes and runs."""

    manager: str  # "launchd" or "systemd"
    path: Path
    content: str
    enable: list[list[str]] = field(default_factory=list)
    disable: list[list[str]] = field(default_factory=list)


def daemon_command(
    python: str, workers: int, digest: str | None = None, serve: ServeOptions | None = None
) -> list[str]:
    """The foreground daemon the service runs (with ``serve``: and its team server)."""
    return [
        python,
        "-m",
        "mlxd",
        "daemon",
        "start",
        "--foreground",
        "--workers",
        str(workers),
        *(["--digest", digest] if digest else []),
        *(serve.daemon_args() if serve else []),
    ]


def launchd_plist(paths: Paths, command: list[str]) -> str:
    return plistlib.dumps(
        {
            "Label": LAUNCHD_LABEL,
            "ProgramArguments": command,
            "EnvironmentVariables": {
                settings.HOME.name: str(paths.home),
                "PATH": "/usr/bin:/bin:/usr/sbin:/sbin",  # sysctl, pmset, notifyutil
            },
            "WorkingDirectory": str(paths.home),
            "RunAtLoad": True,
            # Restart after a crash, not after `mlxd daemon stop` (a clean exit).
            "KeepAlive": {"SuccessfulExit": False},
            "ProcessType": "Interactive",
            "StandardOutPath": str(paths.logs / "launchd.log"),
            "StandardErrorPath": str(paths.logs / "launchd.log"),
        }
    ).decode()


def systemd_unit(paths: Paths, command: list[str]) -> str:
    exec_start = " ".join(shlex.quote(a) for a in command)
    return (
        "[Unit]\n"
        "Description=mlxd: MLX benchmarking and model-management daemon\n\n"
        "[Service]\n"
        f"ExecStart={exec_start}\n"
        f'Environment="{settings.HOME.name}={paths.home}"\n'
        "Restart=on-failure\n"
        "KillSignal=SIGTERM\n"
        # SIGTERM stops the running job and queues it again: give that time.
        "TimeoutStopSec=60\n\n"
        "[Install]\n"
        "WantedBy=default.target\n"
    )


def plan(
    paths: Paths,
    *,
    workers: int = 1,
    digest: str | None = None,
    serve: ServeOptions | None = None,
    system: str | None = None,
    home_dir: Path | None = None,
    uid: int | None = None,
    python: str | None = None,
) -> ServicePlan:
    """The service for this platform (arguments override the machine's, for tests)."""
    system = system or platform.system()
    home_dir = home_dir or Path.home()
    command = daemon_command(python or sys.executable, workers, digest, serve)
    if system == "Darwin":
        uid = os.getuid() if uid is None else uid
        path = home_dir / "Library" / "LaunchAgents" / f"{LAUNCHD_LABEL}.plist"
        return ServicePlan(
            manager="launchd",
            path=path,
            content=launchd_plist(paths, command),
            enable=[["launchctl", "bootstrap", f"gui/{uid}", str(path)]],
            disable=[["launchctl", "bootout", f"gui/{uid}/{LAUNCHD_LABEL}"]],
        )
    if system == "Linux":
        path = home_dir / ".config" / "systemd" / "user" / SYSTEMD_UNIT
        return ServicePlan(
            manager="systemd",
            path=path,
            content=systemd_unit(paths, command),
            enable=[
                ["systemctl", "--user", "daemon-reload"],
                ["systemctl", "--user", "enable", "--now", SYSTEMD_UNIT],
            ],
            disable=[["systemctl", "--user", "disable", "--now", SYSTEMD_UNIT]],
        )
    raise AutostartError(f"starting at login is not supported on {system}")


Runner = Callable[[list[str]], subprocess.CompletedProcess]


def _run(cmd: list[str]) -> subprocess.CompletedProcess:
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=30, check=False)
    except FileNotFoundError:
        raise AutostartError(f"'{cmd[0]}' is not available on this machine") from None


def install(service: ServicePlan, run: Runner = _run) -> None:
    """Write the service file and load it (an older one of ours is replaced)."""
    if service.path.exists():
        for cmd in service.disable:
            run(cmd)  # not loaded is fine
    service.path.parent.mkdir(parents=True, exist_ok=True)
    service.path.write_text(service.content)
    for cmd in service.enable:
        _check(cmd, run(cmd))


def uninstall(service: ServicePlan, run: Runner = _run) -> bool:
    """Unload and remove the service file; False if there was none."""
    if not service.path.exists():
        return False
    for cmd in service.disable:
        run(cmd)  # already unloaded is fine
    service.path.unlink()
    return True


def _check(cmd: list[str], done: subprocess.CompletedProcess) -> None:
    if done.returncode != 0:
        said = " ".join((done.stderr or done.stdout or "").split()) or f"status {done.returncode}"
        raise AutostartError(f"'{' '.join(cmd[:3])}' failed: {said}")
