"""`mlxd jobs logs` on a machine other than the one that ran the job (issue 13): on a shared
PostgreSQL catalog the running daemon copies the job's log into the catalog."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest

from tests.conftest import run_mlxd, wait_for
from tests.test_scaleout import _store, _submit_synths, hosts  # noqa: F401 (fixture)


def test_a_job_log_reads_on_another_host_from_the_catalog(hosts, pg_url, mlxd_home, monkeypatch):  # noqa: F811
    a = hosts("mac-a").start()
    store = _store(pg_url, mlxd_home)
    [job_id] = _submit_synths(store, mlxd_home, ["m0"])
    job = wait_for(
        lambda: (j := store.get_job(job_id)).status in ("succeeded", "failed") and j,
        timeout=120,
        what="the job to end on mac-a",
    )
    assert job.status == "succeeded", job.error
    original = (a.home / "logs" / f"job-{job_id}.log").read_text()
    assert f"=== job {job_id} (synth) attempt 1 on mac-a" in original

    # A laptop: another home and host id; the file in mac-a's home is not there for it.
    laptop = mlxd_home / "laptop"
    monkeypatch.setenv("MLXD_HOST_ID", "laptop")
    shown = wait_for(
        lambda: (
            (p := run_mlxd("jobs", "logs", str(job_id), home=laptop)).stdout.endswith(
                "=== succeeded\n"
            )
            and p
        ),
        timeout=15,
        what="the log's last line in the catalog",
    )
    assert shown.stdout == original
    follow = run_mlxd("jobs", "logs", str(job_id), "--follow", home=laptop)
    assert follow.stdout == original
    # On mac-a itself the file is read, as on one machine: remove the catalog's copy to show it.
    from sqlalchemy import delete

    from mlxd.catalog.models import JobLog

    with store.write() as s:
        s.execute(delete(JobLog))
    assert run_mlxd("jobs", "logs", str(job_id), home=laptop).returncode == 1
    monkeypatch.setenv("MLXD_HOST_ID", "mac-a")
    assert run_mlxd("jobs", "logs", str(job_id), home=a.home).stdout == original


def _laptop(cmd: list[str], home, **env: str) -> subprocess.CompletedProcess:
    """``mlxd CMD`` in its own pid namespace: like another machine, it sees none of the
    daemons' processes (the catalog and the queue are the only things it shares)."""
    if shutil.which("unshare") is None:
        pytest.skip("unshare (util-linux) is needed to hide the daemons' pids")
    probe = subprocess.run(["unshare", "-p", "-f", "--mount-proc", "true"], capture_output=True)
    if probe.returncode != 0:
        pytest.skip(f"cannot make a pid namespace here: {probe.stderr.decode().strip()}")
    return subprocess.run(
        ["unshare", "-p", "-f", "--mount-proc", sys.executable, "-m", "mlxd", *cmd],
        env=dict(os.environ, MLXD_HOME=str(home), **env),
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_wait_on_a_laptop_follows_a_job_another_machine_runs(
    hosts,  # noqa: F811
    pg_url,
    mlxd_home,
    tiny_model_dir,
):
    a = hosts("mac-a").start()
    run_mlxd("models", "add", str(tiny_model_dir), "--name", "tiny", home=a.home, check=True)
    laptop = mlxd_home / "laptop"
    # Six trials a second apart: several seconds of running, on mac-a.
    proc = _laptop(
        ["bench", "tiny", "-p", "8", "-g", "2", "-n", "6", "--delay", "1", "--wait"],
        laptop,
        MLXD_HOST_ID="laptop",
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "succeeded" in proc.stdout
    [job] = _store(pg_url, mlxd_home).list_jobs(kind="bench")
    assert job.status == "succeeded" and job.host == "mac-a"
    # With mac-a gone, a wait says so instead of waiting forever.
    a.stop()
    proc = _laptop(["bench", "tiny", "-p", "8", "-g", "2", "--wait"], laptop, MLXD_HOST_ID="laptop")
    assert proc.returncode == 1
    assert proc.stderr.startswith("Error: the daemon is not running"), proc.stderr
