"""Shared fixtures: a private MLXD_HOME per test, a real daemon process, tiny real models."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent

# The suite starts well over a thousand `python -m mlxd` processes (commands, daemons, job
# children). In a PYTHONDONTWRITEBYTECODE shell (these machines set it) each one compiled mlxd
# from source again: ~0.03-0.09 s of CPU a process, 10-25% of a short command. Tests use the
# bytecode an installed mlxd has, kept outside the source tree (as benchmarks/latency.py does).
PYCACHE = REPO / ".cache" / "pycache"
os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
os.environ.setdefault("PYTHONPYCACHEPREFIX", str(PYCACHE))
sys.dont_write_bytecode = False
sys.pycache_prefix = os.environ["PYTHONPYCACHEPREFIX"]


# -- PostgreSQL (issue 13) ----------------------------------------------------------------
# With MLXD_TEST_DATABASE_URL set (.ci/run sets it when a local server answers), these
# modules run a second time on PostgreSQL, each test in a fresh database; without it, the
# PostgreSQL runs are skipped with the reason.
ENV_TEST_DATABASE_URL = "MLXD_TEST_DATABASE_URL"
PG_SKIP = f"{ENV_TEST_DATABASE_URL} is not set (no PostgreSQL server to test against)"
# module -> the tests run again (None: all of them). The daemon tests are the slow ones: the
# queue's own behaviour (priorities, workers, chains) is what differs between backends.
BOTH_BACKENDS_MODULES: dict[str, set[str] | None] = {
    "test_catalog": None,
    "test_results": None,
    "test_vocab": {"test_the_quantization_label_is_the_same_in_python_and_in_sql"},
    "test_scheduling": None,
    "test_users": {"test_users_are_kept_as_hashes_and_found_by_their_token"},  # tests/server/
    "test_metrics": {"test_the_scrape_counts_what_the_catalog_holds"},  # tests/server/
    "test_queue_behaviour": {
        "test_higher_priority_runs_first",
        "test_two_workers_run_two_jobs_at_once",
        "test_a_failed_link_fails_the_whole_chain",
    },
}


def pytest_configure(config):
    config.addinivalue_line("markers", "sqlite_only: not run again on PostgreSQL")


def pytest_generate_tests(metafunc):
    module = metafunc.module.__name__.rsplit(".", 1)[-1]
    if "catalog_backend" not in metafunc.fixturenames or module not in BOTH_BACKENDS_MODULES:
        return
    chosen = BOTH_BACKENDS_MODULES[module]
    if chosen is None or metafunc.function.__name__ in chosen:
        metafunc.parametrize("catalog_backend", ["sqlite", "postgresql"], indirect=True)


def fresh_database(base_url: str) -> tuple[str, Callable[[], None]]:
    """A new, empty database on the server of ``base_url``: (its URL, a function to drop it)."""
    import uuid
    from urllib.parse import urlsplit

    import psycopg

    name = f"mlxd_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(base_url, autocommit=True) as con:
        con.execute(f'create database "{name}" template template0')
    url = urlsplit(base_url)._replace(path=f"/{name}").geturl()

    def drop() -> None:
        with psycopg.connect(base_url, autocommit=True) as con:
            con.execute(f'drop database if exists "{name}" with (force)')

    return url, drop


@pytest.fixture
def pg_url(monkeypatch) -> Iterator[str]:
    """A fresh PostgreSQL database as this test's MLXD_DATABASE_URL (skips without one)."""
    base = os.environ.get(ENV_TEST_DATABASE_URL)
    if not base:
        pytest.skip(PG_SKIP)
    url, drop = fresh_database(base)
    monkeypatch.setenv("MLXD_DATABASE_URL", url)
    import mlxd.cli.context as context

    context.reset()
    yield url
    context.reset()
    from mlxd.scheduling.queue import get_huey

    get_huey.cache_clear()
    drop()


@pytest.fixture(autouse=True)
def catalog_backend(request, mlxd_home) -> str:
    """'sqlite', or 'postgresql' with this test's own database: parametrized in the
    modules of BOTH_BACKENDS_MODULES, 'sqlite' everywhere else."""
    backend = getattr(request, "param", "sqlite")
    if backend == "postgresql":
        if request.node.get_closest_marker("sqlite_only"):
            pytest.skip("about the SQLite catalog file itself")
        request.getfixturevalue("pg_url")
    return backend


@pytest.fixture(autouse=True)
def mlxd_home(tmp_path, monkeypatch) -> Path:
    """Every test gets its own MLXD_HOME, and nothing reaches the user's home or the hub."""
    home = tmp_path / "mlxd-home"
    monkeypatch.setenv("MLXD_HOME", str(home))
    monkeypatch.delenv("MLXD_DATABASE_URL", raising=False)  # SQLite unless a test asks
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    # No spare child in the daemons a test starts: each spare imports mlx and mlx_lm (~1.2 s
    # of CPU) beside the test, and the last one a daemon starts is never used. The tests about
    # spares (tests/test_sysinfo.py) turn it back on; module daemons started before this
    # fixture and the seams' fill (one job of every kind) keep it, as tests/faults does not.
    monkeypatch.setenv("MLXD_SPARE_CHILD", "0")
    import mlxd.cli.context as context
    from mlxd.scheduling.queue import get_huey

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
            ],
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


# MLXD_* variables a copied catalog does not depend on (any other one, e.g. a PostgreSQL URL or
# a host id, and add_tiny runs the command itself).
_TEMPLATE_NEUTRAL_ENV = {"MLXD_HOME", "MLXD_SPARE_CHILD", ENV_TEST_DATABASE_URL}


def add_tiny(tiny_model_dir: Path, home: Path | None = None) -> None:
    """`mlxd models add TINY --name tiny`, the commonest first step of a test.

    Creating a catalog and adding the model costs a CLI process ~1.5 s of CPU (the catalog's
    migrations, then the folder's checks). On a new home and SQLite, the test gets a copy of
    the home that command made once per session (the same catalog: one model row, at the
    same path); otherwise the command runs. `models add` itself is tested with the command.
    """
    import shutil

    home = home or Path(os.environ["MLXD_HOME"])
    extra = {k for k in os.environ if k.startswith("MLXD_")} - _TEMPLATE_NEUTRAL_ENV
    if extra or (home.exists() and any(home.iterdir())):
        run_mlxd("models", "add", str(tiny_model_dir), "--name", "tiny", home=home, check=True)
        return
    template = tiny_model_dir.parent / "tiny-added-home"
    if not (template / "catalog.db").exists():
        staging = tiny_model_dir.parent / f"tiny-added-home.{os.getpid()}"
        shutil.rmtree(staging, ignore_errors=True)
        run_mlxd("models", "add", str(tiny_model_dir), "--name", "tiny", home=staging, check=True)
        staging.rename(template)
    shutil.copytree(template, home, dirs_exist_ok=True)


def wait_for(predicate, timeout: float = 60, interval: float = 0.05, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out waiting for {what}")
