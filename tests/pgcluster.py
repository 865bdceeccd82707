"""A private PostgreSQL server for a test that must stop and start it (the shared server on
5432 is never touched): initdb into a fresh folder, a free port on 127.0.0.1, trust auth,
no fsync. As root, the server's programs run as the ``postgres`` system user (initdb and
postgres refuse root). :func:`start_cluster` raises :class:`Unavailable` with the reason when
the programs are missing or the server does not come up; the fixture turns it into a skip.
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

BIN_DIRS = [Path(p) for p in sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True)]
BIN_DIRS.append(Path("/usr/local/bin"))
RUN_AS = "postgres"


class Unavailable(Exception):
    """No private PostgreSQL server can be started here (the message says why)."""


def _bin_dir() -> Path:
    for d in BIN_DIRS:
        if all((d / p).is_file() and os.access(d / p, os.X_OK) for p in ("initdb", "pg_ctl")):
            return d
    found = shutil.which("pg_ctl")
    if found and shutil.which("initdb"):
        return Path(found).parent
    raise Unavailable("PostgreSQL's initdb and pg_ctl are not installed")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PgCluster:
    """One private server: ``url`` while it runs; ``stop()``/``start()`` as often as a test
    likes; ``destroy()`` stops it and removes its folder."""

    def __init__(self):
        self.bin = _bin_dir()
        self.as_user: list[str] = []
        uid = gid = None
        if os.geteuid() == 0:
            try:
                pw = pwd.getpwnam(RUN_AS)
            except KeyError:
                raise Unavailable(f"running as root and there is no '{RUN_AS}' user") from None
            uid, gid = pw.pw_uid, pw.pw_gid
            runuser = shutil.which("runuser") or shutil.which("setpriv")
            if runuser is None:
                raise Unavailable("running as root without runuser or setpriv")
            if runuser.endswith("runuser"):
                self.as_user = [runuser, "-u", RUN_AS, "--"]
            else:
                self.as_user = [runuser, f"--reuid={uid}", f"--regid={gid}", "--clear-groups"]
        # Not under pytest's tmp_path: its folders are the test user's alone (mode 700).
        self.root = Path(tempfile.mkdtemp(prefix="mlxd-pg-"))
        self.data = self.root / "data"
        self.logfile = self.root / "server.log"
        if uid is not None:
            os.chown(self.root, uid, gid)
        self.port = _free_port()
        self.url = f"postgresql://{RUN_AS}@127.0.0.1:{self.port}/postgres"
        try:
            self._run(
                "initdb", "-D", str(self.data), "-U", RUN_AS, "--auth=trust", "-E", "UTF8",
                "--no-sync", timeout=120,
            )  # fmt: skip
        except BaseException:
            shutil.rmtree(self.root, ignore_errors=True)
            raise

    def _run(self, prog: str, *args: str, timeout: float = 60) -> str:
        cmd = [*self.as_user, str(self.bin / prog), *args]
        proc = subprocess.run(
            cmd, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL
        )
        if proc.returncode != 0:
            raise Unavailable(f"{prog} failed ({proc.returncode}): {(proc.stderr or '')[-500:]}")
        return proc.stdout

    def start(self, timeout: float = 30) -> None:
        opts = f"-k {self.root} -c listen_addresses=127.0.0.1 -p {self.port} -c fsync=off"
        self._run(
            "pg_ctl", "start", "-w", "-t", str(int(timeout)), "-D", str(self.data),
            "-l", str(self.logfile), "-o", opts, timeout=timeout + 10,
        )  # fmt: skip
        self.wait_ready(timeout)

    def wait_ready(self, timeout: float = 30) -> None:
        import psycopg

        deadline = time.monotonic() + timeout
        while True:
            try:
                with psycopg.connect(self.url, connect_timeout=2) as con:
                    con.execute("select 1")
                return
            except psycopg.OperationalError as e:
                if time.monotonic() > deadline:
                    raise Unavailable(f"the private server did not answer: {e}") from None
                time.sleep(0.1)

    def stop(self, mode: str = "fast") -> None:
        self._run("pg_ctl", "stop", "-w", "-m", mode, "-D", str(self.data), timeout=60)

    def running(self) -> bool:
        pid = self.data / "postmaster.pid"
        return pid.exists()

    def log(self) -> str:
        try:
            return self.logfile.read_text()
        except OSError:
            return ""

    def destroy(self) -> None:
        if self.running():
            try:
                self._run("pg_ctl", "stop", "-w", "-m", "immediate", "-D", str(self.data))
            except Unavailable:
                pass
        shutil.rmtree(self.root, ignore_errors=True)


def start_cluster() -> PgCluster:
    """A running private server (raises Unavailable with the reason)."""
    try:
        import psycopg  # noqa: F401
    except ImportError:
        raise Unavailable("psycopg is not installed") from None
    cluster = PgCluster()
    try:
        cluster.start()
    except BaseException:
        cluster.destroy()
        raise
    return cluster
