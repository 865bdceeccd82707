"""Shared fixtures: a private MLXD_HOME per test, a real daemon process, tiny real models."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True)
def mlxd_home(tmp_path, monkeypatch) -> Path:
    """Every test gets its own MLXD_HOME, and nothing reaches the user's home or the hub."""
    home = tmp_path / "mlxd-home"
    monkeypatch.setenv("MLXD_HOME", str(home))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    import mlxd.cli.context as context
    from mlxd.daemon.queue import get_huey

    context.reset()
    get_huey.cache_clear()
    yield home
    context.reset()


def mlxd_env(home: Path) -> dict[str, str]:
    return dict(os.environ, MLXD_HOME=str(home), HF_HUB_OFFLINE="1")


def run_mlxd(*args: str, home: Path | None = None, check: bool = False, timeout: float = 300):
    """Run the real `mlxd` command in a subprocess (as a user would)."""
    home = home or Path(os.environ["MLXD_HOME"])
    proc = subprocess.run(
        [sys.executable, "-m", "mlxd", *args],
        capture_output=True,
        text=True,
        env=mlxd_env(home),
        timeout=timeout,
    )
    if check and proc.returncode != 0:
        raise AssertionError(
            f"mlxd {' '.join(args)} exited {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
        )
    return proc


def run_json(*args: str, home: Path | None = None):
    return json.loads(run_mlxd(*args, "--json", home=home, check=True).stdout)


class Daemon:
    """A real daemon process on a test's MLXD_HOME, stopped by its own pid."""

    def __init__(self, home: Path):
        self.home = home
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 30, workers: int = 1) -> Daemon:
        log = open(self.home.parent / "daemon-stdio.log", "a")
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "mlxd",
                "daemon",
                "start",
                "--foreground",
                "--workers",
                str(workers),
            ],  # fmt: skip
            env=mlxd_env(self.home),
            stdout=log,
            stderr=log,
            stdin=subprocess.DEVNULL,
        )
        pidfile = self.home / "daemon.pid"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"daemon exited at start: {self.stdio()}")
            if pidfile.exists() and pidfile.read_text().strip() == str(self.proc.pid):
                return self
            time.sleep(0.05)
        raise AssertionError("daemon did not become ready")

    def stdio(self) -> str:
        return (self.home.parent / "daemon-stdio.log").read_text()

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self, timeout: float = 30) -> int | None:
        if self.proc is None or self.proc.poll() is not None:
            return None if self.proc is None else self.proc.returncode
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait(10)


@pytest.fixture
def daemon(mlxd_home):
    d = Daemon(mlxd_home)
    mlxd_home.mkdir(parents=True, exist_ok=True)
    yield d
    d.stop()


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """A ~1M-parameter llama made once per session (HF format, float32, random weights)."""
    from mlxd.engine.synth import synth_model

    out = tmp_path_factory.mktemp("models") / "tiny"
    synth_model(out, arch="llama", size="tiny", seed=0)
    return out


def wait_for(predicate, timeout: float = 60, interval: float = 0.05, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out waiting for {what}")
