"""The fault-injection suite's fixtures: a real daemon on a tmp MLXD_HOME with short leases,
job rows read straight from the catalog (no CLI start-up per look), and checks that every job
ended once, with its true reason, and left nothing behind.

Helpers are fixtures, not imports, so plain `pytest` collects this folder too.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

# Short leases and timeouts: the whole suite must stay within a couple of minutes.
FAST = {
    "MLXD_LEASE_TIMEOUT_S": "3",
    "MLXD_CHILD_HEARTBEAT_S": "0.5",
    "MLXD_HOUSEKEEPING_S": "0.5",
    "MLXD_BUSY_TIMEOUT_S": "1",
    "HF_HUB_OFFLINE": "1",
    # A spare imports mlx beside the job on these 2 cores: only the tests about it keep it.
    "MLXD_SPARE_CHILD": "0",
}
FINAL = ("succeeded", "failed", "cancelled")


class FaultHome:
    """One MLXD_HOME with its daemons; everything it starts it stops by pid."""

    def __init__(self, home: Path):
        self.home = home
        self.daemons: list[subprocess.Popen] = []
        self.extra: list[subprocess.Popen] = []
        home.mkdir(parents=True, exist_ok=True)

    # -- running things --------------------------------------------------------------

    def env(self, **extra: str) -> dict[str, str]:
        return {**os.environ, "MLXD_HOME": str(self.home), **FAST, **extra}

    def mlxd(self, *args: str, check: bool = True, timeout: float = 120, **env: str):
        proc = subprocess.run(
            [sys.executable, "-m", "mlxd", *args],
            capture_output=True,
            text=True,
            env=self.env(**env),
            timeout=timeout,
        )
        if check and proc.returncode != 0:
            raise AssertionError(f"mlxd {' '.join(args)}: {proc.returncode}\n{proc.stderr}")
        return proc

    def submit(self, *args: str) -> int:
        """Through the real CLI (``mlxd quantize ...``)."""
        out = self.mlxd(*args).stdout  # "Queued job N: ..."
        return int(out.split()[2].rstrip(":"))

    def queue(self, kind: str, **params) -> int:
        """What a submit does (a catalog row, then the queue), without a CLI process each time:
        on these shared 2 cores a CLI start costs seconds."""
        from mlxd.catalog.store import Store
        from mlxd.config import paths
        from mlxd.jobs import load_kind
        from mlxd.scheduling.queue import enqueue

        spec = load_kind(kind).Spec(**params)
        p = paths(self.home)
        store = Store(p)
        try:
            job = store.submit_job(kind, spec.to_params())
        finally:
            store.close()
        enqueue(p, job.id)
        return job.id

    def start(self, workers: int = 1, timeout: float = 60, **env: str) -> subprocess.Popen:
        log = open(self.home.parent / "daemon-stdio.log", "a")
        proc = subprocess.Popen(
            [sys.executable, "-m", "mlxd", "daemon", "start", "--foreground"]
            + ["--workers", str(workers)],
            env=self.env(**env),
            stdout=log,
            stderr=log,
            stdin=subprocess.DEVNULL,
        )
        self.daemons.append(proc)
        pidfile = self.home / "daemon.pid"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise AssertionError(f"daemon exited at start: {self.daemon_log()[-2000:]}")
            if pidfile.exists() and pidfile.read_text().strip() == str(proc.pid):
                return proc
            time.sleep(0.05)
        raise AssertionError("daemon did not become ready")

    def kill(self, proc: subprocess.Popen, sig: int = signal.SIGKILL) -> None:
        proc.send_signal(sig)
        proc.wait(30)

    def stop_all(self) -> None:
        for proc in self.daemons + self.extra:
            if proc.poll() is None:
                try:
                    os.kill(proc.pid, signal.SIGCONT)
                except ProcessLookupError:
                    continue
                proc.terminate()
                try:
                    proc.wait(30)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(10)

    def daemon_log(self) -> str:
        try:
            return (self.home / "logs" / "daemon.log").read_text()
        except OSError:
            return ""

    # -- the catalog, read directly ------------------------------------------------------

    def rows(self, sql: str, *args) -> list[dict]:
        con = sqlite3.connect(self.home / "catalog.db", timeout=30)
        con.row_factory = sqlite3.Row
        try:
            return [dict(r) for r in con.execute(sql, args)]
        finally:
            con.close()

    def job(self, job_id: int) -> dict:
        [row] = self.rows("select * from job where id = ?", job_id)
        return row

    def wait_job(self, job_id: int, statuses=FINAL, timeout: float = 120) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            row = self.job(job_id)
            if row["status"] in statuses:
                return row
            time.sleep(0.05)
        raise AssertionError(f"job {job_id} still {self.job(job_id)}\n{self.daemon_log()[-3000:]}")

    def wait_running_child(self, job_id: int, timeout: float = 60) -> int:
        """The job's child pid once the catalog shows it running."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            row = self.job(job_id)
            if row["status"] in FINAL:
                raise AssertionError(f"job {job_id} ended before it could be caught: {row}")
            if row["status"] == "running" and row["pid"]:
                return row["pid"]
            time.sleep(0.01)
        raise AssertionError(f"job {job_id} never ran")

    def models(self) -> list[str]:
        return [r["name"] for r in self.rows("select name from model order by id")]

    def add_model(self, src: Path, name: str = "tiny") -> None:
        self.mlxd("models", "add", str(src), "--name", name)

    # -- what must hold after any fault ----------------------------------------------------

    def assert_consistent(self) -> None:
        """No job running without a live child, no folder without a row, no partials."""
        for row in self.rows("select * from job where status = 'running'"):
            assert row["pid"] and psutil.pid_exists(row["pid"]), f"running without child: {row}"
        paths = {r["path"] for r in self.rows("select path from model")}
        models = self.home / "models"
        for folder in models.iterdir():
            if folder.name.startswith("."):
                continue
            assert str(folder) in paths, f"{folder} has no catalog row"
        partial = models / ".partial"
        assert not partial.exists() or list(partial.iterdir()) == []
        names = self.models()
        assert len(names) == len(set(names))


def spare_pids(daemon_pid: int) -> list[int]:
    try:
        children = psutil.Process(daemon_pid).children()
    except psutil.Error:
        return []
    out = []
    for c in children:
        try:
            if "--preload" in c.cmdline():
                out.append(c.pid)
        except psutil.Error:
            pass
    return out


def zombies(daemon_pid: int) -> list[int]:
    try:
        return [
            c.pid
            for c in psutil.Process(daemon_pid).children()
            if c.status() == psutil.STATUS_ZOMBIE
        ]
    except psutil.Error:
        return []


@pytest.fixture
def fh(mlxd_home):
    h = FaultHome(mlxd_home)
    yield h
    h.stop_all()


@pytest.fixture(scope="session")
def tiny_catalog(tmp_path_factory, tiny_model_dir) -> Path:
    """A catalog with the session's tiny model registered as 'tiny' (made once, copied)."""
    home = tmp_path_factory.mktemp("tiny-catalog") / "home"
    FaultHome(home).add_model(tiny_model_dir)
    con = sqlite3.connect(home / "catalog.db")
    con.execute("pragma wal_checkpoint(TRUNCATE)")  # everything in the main file
    con.close()
    return home / "catalog.db"


@pytest.fixture
def fh_tiny(fh, tiny_catalog):
    shutil.copyfile(tiny_catalog, fh.home / "catalog.db")
    return fh


@pytest.fixture
def helpers():
    return type(
        "Helpers",
        (),
        {"spare_pids": staticmethod(spare_pids), "zombies": staticmethod(zombies), "json": json},
    )
