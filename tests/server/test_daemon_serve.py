"""`mlxd daemon start --serve ADDR`: the team server runs beside the daemon as its own
process, is started again if it dies, shows in `daemon status`, and stops with the daemon."""

from __future__ import annotations

import json
import os
import signal

import httpx
import psutil
import pytest

from benchmarks.server import free_port
from tests.conftest import run_mlxd, wait_for


def _gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


@pytest.fixture
def started(mlxd_home):
    """The daemon started in the background with --serve; whatever still runs at the end
    is stopped by its pid."""
    port = free_port()
    proc = run_mlxd("daemon", "start", "--serve", f"127.0.0.1:{port}", "--public-read")
    pids = []
    try:
        daemon_pid = int((mlxd_home / "daemon.pid").read_text().split()[0])
        pids.append(daemon_pid)
    except (OSError, ValueError):
        pass
    yield proc, port
    record = mlxd_home / "server.json"
    if record.exists():
        pids.append(json.loads(record.read_text())["pid"])
    for pid in pids:
        if not _gone(pid):
            os.kill(pid, signal.SIGKILL)


def test_the_server_runs_beside_the_daemon_and_stops_with_it(started, mlxd_home):
    proc, port = started
    url = f"http://127.0.0.1:{port}"
    assert proc.returncode == 0, proc.stderr
    assert f"Team server at {url}" in proc.stdout
    status = json.loads(run_mlxd("daemon", "status", "--json", check=True).stdout)
    server = status["server"]
    assert server["url"] == url and server["running"] is True
    assert server["pid"] != status["pid"]  # its own process
    assert psutil.Process(server["pid"]).ppid() == status["pid"]
    text = run_mlxd("daemon", "status", check=True).stdout
    assert f"Team server: {url} (pid {server['pid']})" in text

    # the flags reached the server (--public-read: no token), and it reads the catalog
    # the daemon beats in
    r = httpx.get(f"{url}/metrics", timeout=10)
    assert r.status_code == 200
    assert 'mlxd_daemon_up{host="' in r.text and "mlxd_catalog_up 1.0" in r.text
    assert 'mlxd_memory_budget_bytes{host="' in r.text  # the daemon's machine row
    assert "mlxd_memory_in_use_bytes{host=" in r.text

    # a server that dies is started again by the daemon
    os.kill(server["pid"], signal.SIGKILL)
    again = wait_for(
        lambda: (
            (s := json.loads(run_mlxd("daemon", "status", "--json").stdout)["server"])
            and s["running"]
            and s["pid"] != server["pid"]
            and s
        ),
        timeout=30,
        interval=0.3,
        what="the server started again",
    )
    wait_for(lambda: _answers(url), timeout=30, what="the new server to answer")

    out = run_mlxd("daemon", "stop", check=True)
    assert "Daemon stopped" in out.stdout
    assert _gone(again["pid"])
    assert not (mlxd_home / "server.json").exists()
    assert not _answers(url)


def _answers(url: str) -> bool:
    try:
        return httpx.get(f"{url}/metrics", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def test_a_daemon_killed_outright_takes_its_server_down(started, mlxd_home):
    """kill -9 of the daemon (no service manager to clean up): its server notices its parent
    gone and stops, freeing the port; the next start serves there again."""
    proc, port = started
    assert proc.returncode == 0, proc.stderr
    url = f"http://127.0.0.1:{port}"
    status = json.loads(run_mlxd("daemon", "status", "--json", check=True).stdout)
    server_pid = status["server"]["pid"]
    assert _answers(url)
    os.kill(status["pid"], signal.SIGKILL)
    wait_for(lambda: _gone(server_pid), timeout=20, what="the orphaned server to stop")
    assert not _answers(url)
    assert (
        f"its daemon (pid {status['pid']}) is gone; stopping"
        in (mlxd_home / "logs" / "server.log").read_text()
    )
    again = run_mlxd("daemon", "start", "--serve", f"127.0.0.1:{port}", "--public-read")
    assert again.returncode == 0, again.stderr
    wait_for(lambda: _answers(url), timeout=30, what="the new server to answer")
    run_mlxd("daemon", "stop", check=True)


def test_serve_flags_need_serve_and_a_bad_address_is_refused(mlxd_home):
    proc = run_mlxd("daemon", "start", "--tls-cert", "c.pem")
    assert proc.returncode == 2 and "--tls-cert needs --serve HOST:PORT" in proc.stderr
    proc = run_mlxd("daemon", "start", "--serve", "localhost")
    assert proc.returncode == 2 and "'localhost' is not HOST:PORT" in proc.stderr
    assert not (mlxd_home / "daemon.pid").exists()
