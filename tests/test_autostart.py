"""Starting the daemon at login: the launchd agent (macOS) and systemd unit (Linux) mlxd writes.

launchctl does not exist here: its calls go to a recorder that answers as launchctl does.
"""

from __future__ import annotations

import plistlib
import subprocess

import pytest

from mlxd.config import paths
from mlxd.daemon import autostart
from tests.conftest import run_mlxd


class Recorder:
    def __init__(self, fail: dict[str, tuple[int, str]] | None = None):
        self.calls: list[list[str]] = []
        self.fail = fail or {}

    def __call__(self, cmd: list[str]) -> subprocess.CompletedProcess:
        self.calls.append(cmd)
        rc, err = self.fail.get(cmd[1], (0, ""))
        return subprocess.CompletedProcess(cmd, rc, "", err)


def mac_plan(tmp_path, **kw):
    return autostart.plan(
        paths(tmp_path / "home"),
        system="Darwin",
        home_dir=tmp_path / "user",
        uid=501,
        python="/opt/venv/bin/python",
        **kw,
    )


def test_launch_agent_runs_the_foreground_daemon_in_the_user_session(tmp_path):
    service = mac_plan(tmp_path, workers=2)
    assert service.path == tmp_path / "user/Library/LaunchAgents/dev.mlxd.daemon.plist"
    plist = plistlib.loads(service.content.encode())
    assert plist["Label"] == "dev.mlxd.daemon"
    assert plist["ProgramArguments"] == [
        "/opt/venv/bin/python",
        "-m",
        "mlxd",
        "daemon",
        "start",
        "--foreground",
        "--workers",
        "2",
    ]
    assert plist["EnvironmentVariables"]["MLXD_HOME"] == str(tmp_path / "home")
    assert plist["ProcessType"] == "Interactive"  # not throttled by launchd
    assert plist["RunAtLoad"] is True and plist["KeepAlive"] == {"SuccessfulExit": False}
    assert plist["StandardErrorPath"].endswith("/logs/launchd.log")
    assert service.enable == [["launchctl", "bootstrap", "gui/501", str(service.path)]]


def test_install_writes_and_bootstraps_and_a_reinstall_boots_the_old_one_out(tmp_path):
    service = mac_plan(tmp_path)
    run = Recorder()
    autostart.install(service, run)
    assert service.path.read_text() == service.content
    assert run.calls == [["launchctl", "bootstrap", "gui/501", str(service.path)]]
    run = Recorder(fail={"bootout": (3, "Boot-out failed: 3: No such process")})
    autostart.install(service, run)
    assert [c[1] for c in run.calls] == ["bootout", "bootstrap"]
    assert autostart.uninstall(service, Recorder()) is True
    assert not service.path.exists()
    assert autostart.uninstall(service, Recorder()) is False


def test_a_launchctl_failure_is_one_line(tmp_path):
    run = Recorder(fail={"bootstrap": (5, "Bootstrap failed: 5: Input/output error\n")})
    with pytest.raises(autostart.AutostartError) as e:
        autostart.install(mac_plan(tmp_path), run)
    assert str(e.value) == (
        "'launchctl bootstrap gui/501' failed: Bootstrap failed: 5: Input/output error"
    )


def test_systemd_user_unit(tmp_path):
    service = autostart.plan(
        paths(tmp_path / "home"), system="Linux", home_dir=tmp_path / "u", python="/usr/bin/python3"
    )
    assert service.path == tmp_path / "u/.config/systemd/user/mlxd.service"
    assert "ExecStart=/usr/bin/python3 -m mlxd daemon start --foreground --workers 1" in (
        service.content
    )
    assert f'Environment="MLXD_HOME={tmp_path / "home"}"' in service.content
    assert "Restart=on-failure" in service.content
    assert service.enable[-1] == ["systemctl", "--user", "enable", "--now", "mlxd.service"]
    with pytest.raises(autostart.AutostartError, match="not supported on Windows"):
        autostart.plan(paths(tmp_path), system="Windows")


def test_cli_dry_run_prints_the_file_and_uninstall_says_when_there_is_none(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path / "user"))
    out = run_mlxd("daemon", "install", "--dry-run", check=True).stdout
    assert out.startswith(f"# {tmp_path / 'user'}")
    assert "-m mlxd daemon start --foreground --workers 1\n" in out
    out = run_mlxd("daemon", "install", "--dry-run", "--serve", "127.0.0.1:8765", check=True)
    assert "-m mlxd daemon start --foreground --workers 1 --serve 127.0.0.1:8765\n" in out.stdout
    proc = run_mlxd("daemon", "uninstall")
    assert proc.returncode == 1 and "no login service is installed" in proc.stderr


def test_the_service_starts_the_team_server_beside_the_daemon(tmp_path):
    """`daemon install --serve`: one service, whose daemon starts `mlxd serve` itself."""
    from mlxd.daemon.webserver import ServeOptions

    serve = ServeOptions("0.0.0.0:8765", tls_cert="/etc/mlxd/c.pem", tls_key="/etc/mlxd/k.pem")
    plist = plistlib.loads(mac_plan(tmp_path, serve=serve).content.encode())
    assert plist["ProgramArguments"][-7:] == [
        "1",
        "--serve",
        "0.0.0.0:8765",
        "--tls-cert",
        "/etc/mlxd/c.pem",
        "--tls-key",
        "/etc/mlxd/k.pem",
    ]
    unit = autostart.plan(
        paths(tmp_path / "home"),
        system="Linux",
        home_dir=tmp_path / "u",
        python="/usr/bin/python3",
        serve=ServeOptions("127.0.0.1:8765", public_read=True),
    ).content
    assert (
        "ExecStart=/usr/bin/python3 -m mlxd daemon start --foreground --workers 1 "
        "--serve 127.0.0.1:8765 --public-read\n"
    ) in unit
    # the flags passed on to the server need --serve; a bad address is a usage error
    proc = run_mlxd("daemon", "install", "--dry-run", "--public-read")
    assert proc.returncode == 2 and "--public-read needs --serve HOST:PORT" in proc.stderr
    proc = run_mlxd("daemon", "install", "--dry-run", "--serve", "8765")
    assert proc.returncode == 2 and "is not HOST:PORT" in proc.stderr
