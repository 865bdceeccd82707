"""TEMPORARY stand-in for T1's server fixture (same interface: ``server`` with .url, .home,
.env, .tokens[role], .stop()); T1's conftest replaces it at merge."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from tests.conftest import REPO

USERS = {"admin": "admin", "submitter": "alice", "viewer": "viewer"}


@dataclass
class Server:
    url: str
    home: Path
    env: dict[str, str]
    proc: subprocess.Popen
    tokens: dict[str, str] = field(default_factory=dict)
    users: dict[str, str] = field(default_factory=lambda: dict(USERS))

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            self.proc.wait(15)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    home = tmp_path_factory.mktemp("server") / "mlxd-home"
    home.mkdir(parents=True)
    tokens = {role: f"tok-{name}" for role, name in USERS.items()}
    (home / "server-tokens.json").write_text(
        json.dumps({tokens[r]: [n, r] for r, n in USERS.items()})
    )
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = dict(os.environ, MLXD_HOME=str(home), HF_HUB_OFFLINE="1", PYTHONPATH=str(REPO))
    code = (
        "import uvicorn; from pathlib import Path; from mlxd.config import Paths; "
        "from mlxd.server.app import create_app; "
        f"uvicorn.run(create_app(Paths(Path({str(home)!r}))), host='127.0.0.1', port={port}, "
        "log_level='warning')"
    )
    proc = subprocess.Popen([sys.executable, "-c", code], env=env)
    srv = Server(f"http://127.0.0.1:{port}", home, env, proc, tokens)
    deadline = time.monotonic() + 30
    while True:
        try:
            httpx.get(srv.url + "/login", timeout=2)
            break
        except httpx.TransportError:
            if time.monotonic() > deadline or proc.poll() is not None:
                srv.stop()
                raise AssertionError("server did not start") from None
            time.sleep(0.05)
    try:
        yield srv
    finally:
        srv.stop()
