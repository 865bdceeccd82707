"""The team server under test: a real `mlxd serve` process, one per test module.

``server`` (module scope) starts `mlxd serve --bind 127.0.0.1:0` on its own MLXD_HOME (the
port it picked is read from its first line), with three users made before it starts:
``admin`` (admin), ``alice`` (submitter) and ``viewer`` (viewer), their tokens in
``server.tokens[role]``. It is stopped by its pid when the module ends. A module changes how
its server starts with module attributes: ``SERVER_ARGS`` (extra `mlxd serve` options, e.g.
``["--public-read"]``) and ``SERVER_ENV`` (extra environment). ``start_server`` starts
another one (TLS, say) for a single test; stop it with ``.stop()``.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from tests.conftest import REPO

USERS = {"admin": "admin", "submitter": "alice", "viewer": "viewer"}  # role -> user name
LISTENING = re.compile(r"listening on (https?://\S+)")


@dataclass
class Server:
    """A running `mlxd serve`: its URL, home, environment, users' tokens and output."""

    url: str
    home: Path
    env: dict[str, str]
    proc: subprocess.Popen
    output_path: Path
    tokens: dict[str, str] = field(default_factory=dict)  # role -> token
    users: dict[str, str] = field(default_factory=lambda: dict(USERS))  # role -> name
    verify: object = True  # what httpx needs to trust a TLS server's certificate

    @property
    def pid(self) -> int:
        return self.proc.pid

    def output(self) -> str:
        """Everything the server printed so far (stdout and stderr)."""
        return self.output_path.read_text(errors="replace")

    def add_user(self, name: str, role: str) -> str:
        """A new user on this server's catalog; their token."""
        return _add_user(self.home, self.env, name, role)

    def client(self, role: str | None = None, token: str | None = None, **kwargs) -> httpx.Client:
        """An httpx client on the server, with the Bearer token of ``role`` (or ``token``);
        neither: no credentials."""
        token = token or (self.tokens[role] if role else None)
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.Client(
            base_url=self.url, headers=headers, verify=self.verify, timeout=30, **kwargs
        )

    def stop(self, timeout: float = 15) -> None:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout)


def _add_user(home: Path, env: dict[str, str], name: str, role: str) -> str:
    """Add a user in this process, on the catalog the server uses (its environment's)."""
    from mlxd.config import paths
    from mlxd.server.users import add_user

    saved = os.environ.get("MLXD_DATABASE_URL")
    os.environ.pop("MLXD_DATABASE_URL", None)
    if env.get("MLXD_DATABASE_URL"):
        os.environ["MLXD_DATABASE_URL"] = env["MLXD_DATABASE_URL"]
    try:
        return add_user(paths(home), name, role)
    finally:
        os.environ.pop("MLXD_DATABASE_URL", None)
        if saved is not None:
            os.environ["MLXD_DATABASE_URL"] = saved


def server_env(home: Path, extra: dict[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ, MLXD_HOME=str(home), HF_HUB_OFFLINE="1", PYTHONPATH=str(REPO))
    env.pop("MLXD_DATABASE_URL", None)
    env.pop("MLXD_URL", None)
    env.pop("MLXD_TOKEN", None)
    env.update(extra or {})
    return env


def start_server(
    home: Path,
    args: Sequence[str] = (),
    *,
    env: dict[str, str] | None = None,
    users: bool = True,
    verify: object = True,
    timeout: float = 60,
) -> Server:
    """Start `mlxd serve --bind 127.0.0.1:0 ARGS` on ``home`` (users made first unless
    ``users`` is False) and wait until it answers."""
    home.mkdir(parents=True, exist_ok=True)
    full_env = server_env(home, env)
    tokens = {}
    if users:
        for role, name in USERS.items():
            tokens[role] = _add_user(home, full_env, name, role)
    output_path = home.parent / f"serve-{home.name}.out"
    with open(output_path, "w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "mlxd", "serve", "--bind", "127.0.0.1:0", *args],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=full_env,
            cwd=home.parent,
        )
    server = Server("", home, full_env, proc, output_path, tokens, verify=verify)
    deadline = time.monotonic() + timeout
    try:
        while not server.url:
            if proc.poll() is not None:
                raise AssertionError(f"mlxd serve exited {proc.returncode}:\n{server.output()}")
            if time.monotonic() > deadline:
                raise AssertionError(f"mlxd serve did not start:\n{server.output()}")
            if m := LISTENING.search(server.output()):
                server.url = m.group(1)
            else:
                time.sleep(0.05)
        while True:  # the socket listens before uvicorn answers: wait for an answer
            try:
                with httpx.Client(verify=verify, timeout=5) as c:
                    if c.get(f"{server.url}/health").status_code == 200:
                        break
            except httpx.TransportError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"mlxd serve does not answer:\n{server.output()}")
            time.sleep(0.05)
    except BaseException:
        server.stop()
        raise
    return server


@pytest.fixture(scope="module")
def server(request, tmp_path_factory) -> Iterator[Server]:
    """One real `mlxd serve` for the module (see the module docstring)."""
    home = tmp_path_factory.mktemp("server") / "mlxd-home"
    args = getattr(request.module, "SERVER_ARGS", ())
    env = getattr(request.module, "SERVER_ENV", None)
    srv = start_server(home, args, env=env)
    try:
        yield srv
    finally:
        srv.stop()
