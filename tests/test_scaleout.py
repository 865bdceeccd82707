"""Beyond one Mac (issue 13): PostgreSQL for the catalog and the queue, several daemons with
their own host ids on one queue, a dead host's job taken back once, pools.

Each "host" is a daemon with its own MLXD_HOME (its models, logs, lock) and ``--host-id``,
all on one fresh PostgreSQL database (the ``pg_url`` fixture; skipped without a server).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import run_mlxd, wait_for

FAST = {
    "MLXD_LEASE_TIMEOUT_S": "3",
    "MLXD_CHILD_HEARTBEAT_S": "0.5",
    "MLXD_HOUSEKEEPING_S": "0.5",
    "HF_HUB_OFFLINE": "1",
}


class Host:
    """One daemon with its own home and host id; stopped by its own pid."""

    def __init__(self, root: Path, host_id: str, pools: tuple[str, ...] = (), workers: int = 1):
        self.home = root / host_id
        self.host_id, self.pools, self.workers = host_id, pools, workers
        self.proc: subprocess.Popen | None = None
        self.home.mkdir(parents=True, exist_ok=True)

    def env(self, **extra: str) -> dict[str, str]:
        return dict(os.environ, MLXD_HOME=str(self.home), **{**FAST, **extra})

    def start(self, **extra: str) -> Host:
        args = [
            sys.executable,
            "-m",
            "mlxd",
            "daemon",
            "start",
            "--foreground",
            "--host-id",
            self.host_id,
            "--workers",
            str(self.workers),
        ]
        for pool in self.pools:
            args += ["--pool", pool]
        log = open(self.home.parent / f"{self.host_id}-stdio.log", "a")
        self.proc = subprocess.Popen(
            args, env=self.env(**extra), stdout=log, stderr=log, stdin=subprocess.DEVNULL
        )
        pidfile = self.home / "daemon.pid"
        wait_for(
            lambda: (
                (self.proc.poll() is None or self._died())
                and pidfile.exists()
                and pidfile.read_text().strip() == str(self.proc.pid)
            ),
            timeout=60,
            what=f"daemon {self.host_id} to start",
        )
        return self

    def _died(self):
        raise AssertionError(f"daemon {self.host_id} exited: {self.log()[-2000:]}")

    def log(self) -> str:
        try:
            return (self.home / "logs" / "daemon.log").read_text()
        except OSError:
            return ""

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


@pytest.fixture
def hosts(tmp_path, pg_url):
    made: list[Host] = []

    def make(host_id: str, *pools: str) -> Host:
        h = Host(tmp_path / "hosts", host_id, pools)
        made.append(h)
        return h

    yield make
    for h in made:
        h.stop()


def _store(pg_url: str, home: Path):
    from mlxd.catalog.store import Store
    from mlxd.config import paths

    return Store(paths(home))


def _submit_synths(store, home: Path, names: list[str], pool: str = "default") -> list[int]:
    """Small jobs (a ~1M-parameter random model each), through the Store and the queue."""
    from mlxd.config import paths
    from mlxd.jobs.synth import Spec
    from mlxd.scheduling.queue import enqueue

    ids = []
    for name in names:
        job = store.submit_job("synth", Spec(name=name).to_params(), pool=pool)
        enqueue(paths(home), job.id, pool=pool)
        ids.append(job.id)
    return ids


def test_an_unreachable_database_is_one_line_naming_host_and_port(mlxd_home):
    url = "postgresql://alice:s3cret-pw@127.0.0.1:1/mlxd"
    proc = subprocess.run(
        [sys.executable, "-m", "mlxd", "jobs", "list"],
        capture_output=True,
        text=True,
        env=dict(os.environ, MLXD_HOME=str(mlxd_home), MLXD_DATABASE_URL=url),
        timeout=60,
    )
    assert proc.returncode != 0
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("Error: cannot reach the PostgreSQL database at 127.0.0.1:1")
    assert "s3cret" not in proc.stderr + proc.stdout


def test_a_url_that_is_not_postgresql_is_refused(mlxd_home):
    proc = run_mlxd("jobs", "list", home=mlxd_home, timeout=60)
    assert proc.returncode == 0  # SQLite, as always
    env = dict(os.environ, MLXD_HOME=str(mlxd_home), MLXD_DATABASE_URL="mysql://x@h/db")
    proc = subprocess.run(
        [sys.executable, "-m", "mlxd", "jobs", "list"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert proc.returncode != 0
    assert proc.stderr.startswith("Error: MLXD_DATABASE_URL must be a postgresql:// URL")


def test_postgres_catalog_migrates_to_head_and_matches_the_models(mlxd_home, pg_url):
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext
    from sqlmodel import SQLModel

    from mlxd.catalog import schema

    store = _store(pg_url, mlxd_home)
    assert schema.postgres_revision(store.database) == schema.HEAD_REVISION
    with store._write_engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), SQLModel.metadata)
    # huey's own tables live in the same database; they are not ours to compare.
    diff = [d for d in diff if not (d[0] == "remove_table" and d[1].name.startswith("huey"))]
    assert diff == [], f"models and migrations differ on PostgreSQL: {diff}"
    # A byte count past 2**31 fits (PostgreSQL's integer is 32-bit).
    from mlxd.catalog.models import System

    with store.write() as s:
        s.add(
            System(
                fingerprint="big",
                host="h",
                os_name="Darwin",
                os_version="15",
                cpu="Apple M3 Ultra",
                backend="metal",
                python_version="3.12",
                mlx_version="0.32",
                mlx_lm_version="0.32",
                mlxd_version="0.1",
                ram_bytes=192 * 2**30,
            )
        )
    status = run_mlxd("daemon", "status", home=mlxd_home)
    assert "Catalog and queue: postgresql://" in status.stdout
    assert "/mlxd_test_" in status.stdout


def test_three_daemons_drain_a_queue_each_job_once_and_pools_stay_apart(hosts, pg_url, mlxd_home):
    # 27 + 3 small jobs: a ~1M-parameter random model each (~0.3 s of work), but each in a
    # child that imports mlx and mlx_lm first (~1 s of CPU; a spare child overlaps it with
    # the previous job), so 30 jobs cost about half a minute of the 2 shared cores.
    a = hosts("mac-a").start()
    b = hosts("mac-b").start()
    hosts("mac-c", "default", "big").start()
    store = _store(pg_url, mlxd_home)
    ids = _submit_synths(store, mlxd_home, [f"m{i}" for i in range(27)])
    big = _submit_synths(store, mlxd_home, ["big0", "big1", "big2"], pool="big")

    def done():
        jobs = [store.get_job(i) for i in ids + big]
        return all(j.status in ("succeeded", "failed", "cancelled") for j in jobs) and jobs

    jobs = wait_for(done, timeout=240, interval=0.5, what="30 jobs to finish")
    assert [j.status for j in jobs] == ["succeeded"] * 30, [j.error for j in jobs]
    assert all(j.attempts == 1 and j.interruptions == 0 for j in jobs)
    # Exactly once: one model per job, in the home of the host that ran it, nothing partial.
    ran_on = {j.id: j.host for j in jobs}
    models = store.list_models()
    assert len(models) == 30
    for m in models:
        assert m.host == ran_on[m.created_by_job_id]
        assert Path(m.path).parent == (a.home.parent / m.host / "models").resolve()
    for h in ("mac-a", "mac-b", "mac-c"):
        assert list((a.home.parent / h / "models" / ".partial").iterdir()) == []
    assert set(ran_on.values()) <= {"mac-a", "mac-b", "mac-c"}
    assert len(set(ran_on[i] for i in ids)) >= 2, "one daemon ran every job"
    assert {ran_on[i] for i in big} == {"mac-c"}  # only mac-c joined the pool 'big'

    machines = {m["host_id"]: m for m in _json("machines", "list", home=a.home)}
    assert set(machines) == {"mac-a", "mac-b", "mac-c"}
    assert machines["mac-c"]["pools"] == ["default", "big"]
    assert all(m["state"] == "up" for m in machines.values())
    b.stop()
    after = {m["host_id"]: m["state"] for m in _json("machines", "list", home=a.home)}
    assert after["mac-b"] == "stopped"


def test_a_dead_hosts_job_is_taken_back_once_leaving_one_model(
    hosts, pg_url, mlxd_home, tiny_model_dir
):
    # mac-a dies (SIGKILL, by its own hand) between moving the job's folder into models/ and
    # committing its row: the worst moment. mac-b takes the job back after the lease.
    a = hosts("mac-a")
    run_mlxd("models", "add", str(tiny_model_dir), "--name", "tiny", home=a.home, check=True)
    a.start(MLXD_FAULT_POINT="after-rename")
    run_mlxd("quantize", "tiny", "--bits", "4", "--name", "m1", home=a.home, check=True)
    assert a.proc.wait(120) == -signal.SIGKILL
    store = _store(pg_url, mlxd_home)
    [job] = store.list_jobs()
    assert job.status == "running" and job.host == "mac-a"
    assert (a.home / "models" / "m1").is_dir()  # renamed, never committed

    b = hosts("mac-b").start()
    final = wait_for(
        lambda: (j := store.get_job(job.id)).status in ("succeeded", "failed") and j,
        timeout=120,
        interval=0.25,
        what="mac-b to take the job back and finish it",
    )
    assert final.status == "succeeded", final.error
    assert final.host == "mac-b" and final.interruptions == 1 and final.attempts == 2
    assert "host mac-a stopped" in b.log()
    [model] = [m for m in store.list_models() if m.name != "tiny"]
    assert model.name == "m1" and model.host == "mac-b"
    assert Path(model.path) == (b.home / "models" / "m1").resolve()
    # mac-a comes back: its folder of the lost commit goes; nothing is left behind.
    a.start()
    wait_for(lambda: not (a.home / "models" / "m1").exists(), timeout=30, what="cleanup")
    assert [p.name for p in (a.home / "models").iterdir() if p.name != ".partial"] == []
    assert list((a.home / "models" / ".partial").iterdir()) == []
    assert [m.name for m in store.list_models()] == ["tiny", "m1"]


def test_200_concurrent_submits_from_8_processes_with_daemons_running(
    hosts, pg_url, mlxd_home, tiny_model_dir
):
    run_mlxd("models", "add", str(tiny_model_dir), "--name", "tiny", home=mlxd_home, check=True)
    for name in ("mac-a", "mac-b", "mac-c"):
        hosts(name).start()
    # Each process submits 25 jobs through the real CLI code in one interpreter, to a pool
    # nobody serves (they stay queued: the test is about submitting).
    script = (
        "import sys\n"
        "from mlxd.cli.main import cli\n"
        "for i in range(25):\n"
        "    try:\n"
        "        cli(['bench', 'tiny', '-n', str(i + 1), '--pool', 'parked'])\n"
        "    except SystemExit as e:\n"
        "        if e.code: raise\n"
    )
    env = dict(os.environ, MLXD_HOME=str(mlxd_home), **FAST)
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", script, str(n)],
            env=env,
            text=True,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        for n in range(8)
    ]
    outs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0] * 8, [err for _, err in outs]
    printed = [ln for out, _ in outs for ln in out.splitlines() if ln.startswith("Queued job")]
    ids = [int(ln.split()[2].rstrip(":")) for ln in printed]
    assert len(ids) == 200 and len(set(ids)) == 200
    store = _store(pg_url, mlxd_home)
    jobs = store.list_jobs(["queued"])
    assert len(jobs) == 200 and {j.pool for j in jobs} == {"parked"}
    assert all("Error" not in err for _, err in outs)


def _json(*args: str, home: Path):
    import json

    proc = run_mlxd(*args, "--json", home=home, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def test_machines_list_without_any_daemon(mlxd_home):
    proc = run_mlxd("machines", "list", home=mlxd_home, timeout=60)
    assert proc.returncode == 0
    assert "No machines yet" in proc.stdout
    assert _json("machines", "list", home=mlxd_home) == []


def test_a_hub_model_is_fetched_first_on_the_host_that_runs_the_job(
    hosts, pg_url, mlxd_home, tiny_model_dir
):
    # mac-a pulls org/tiny into its own HF cache; then only mac-b runs. A job on that model
    # is not pinned to mac-a (a model from the hub can be had anywhere): mac-b takes it,
    # fetches the same commit into its own HF cache (verified against the catalog's hashes)
    # and runs on that copy.
    from tests.hubstub import Hub

    def hub_env(h: Host, hub: Hub) -> dict[str, str]:
        return {
            "HF_HOME": str(h.home / "hf"),
            "HF_ENDPOINT": hub.url,
            "HF_HUB_OFFLINE": "0",
            "HF_HUB_DISABLE_XET": "1",
            "HF_HUB_DISABLE_TELEMETRY": "1",
            "HF_HUB_DISABLE_PROGRESS_BARS": "1",
        }

    with Hub() as hub:
        commit = hub.add_repo("org/tiny", folder=tiny_model_dir).branches["main"]
        a, b = hosts("mac-a"), hosts("mac-b")
        a.start(**hub_env(a, hub))
        cli = dict(a.env(**hub_env(a, hub)))
        pulled = subprocess.run(
            [sys.executable, "-m", "mlxd", "pull", "org/tiny", "--wait"],
            env=cli, capture_output=True, text=True, timeout=180,
        )  # fmt: skip
        assert pulled.returncode == 0, pulled.stderr
        store = _store(pg_url, mlxd_home)
        [model] = store.list_models()
        assert model.source == "hub" and model.host == "mac-a"
        assert Path(model.path).is_relative_to(a.home / "hf")
        a.stop()
        b.start(**hub_env(b, hub))
        served = sum(hub.bytes_served.values())

        sub = subprocess.run(
            [sys.executable, "-m", "mlxd", "bench", "tiny", "-p", "8", "-g", "4", "-n", "1",
             "--warmup", "0"],
            env=cli, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert sub.returncode == 0, sub.stderr
        job_id = int(sub.stdout.split()[2].rstrip(":"))
        assert store.get_job(job_id).pool == "default"  # by capacity, not '@mac-a'
        job = wait_for(
            lambda: (j := store.get_job(job_id)).status not in ("queued", "running") and j,
            timeout=120,
            interval=0.25,
            what="the bench on mac-b",
        )
        assert job.status == "succeeded", job.error
        assert job.host == "mac-b"
        snapshot = b.home / "hf" / "hub" / "models--org--tiny" / "snapshots" / commit
        assert (snapshot / "config.json").is_file()
        assert sorted(p.name for p in snapshot.glob("*.safetensors"))
        assert sum(hub.bytes_served.values()) > served  # the files came over again, for mac-b
        log = (b.home / "logs" / f"job-{job_id}.log").read_text()
        assert "pulled on another host" in log, log
        assert "verified in this host's HF cache" in log, log
        [run] = store.bench_runs()
        assert run.model_id == model.id
        # The catalog row still says where the pull happened.
        assert store.resolve_model("tiny").host == "mac-a"

        # A second model a job reads (quality's base, from the lineage) is fetched too.
        for args in (
            ["quantize", "tiny", "--bits", "4", "--name", "tiny-q4"],
            ["quality", "tiny-q4"],
        ):
            sub = subprocess.run(
                [sys.executable, "-m", "mlxd", *args, "--wait"],
                env=cli, capture_output=True, text=True, timeout=180,
            )  # fmt: skip
            assert sub.returncode == 0, sub.stdout + sub.stderr
        [quality] = store.list_jobs(kind="quality")
        assert quality.status == "succeeded" and quality.host == "mac-b"
        log = (b.home / "logs" / f"job-{quality.id}.log").read_text()
        assert "mlxd: model 'tiny' (org/tiny@" in log, log  # the base, fetched on mac-b
