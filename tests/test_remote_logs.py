"""`mlxd jobs logs` on a machine other than the one that ran the job (issue 13): on a shared
PostgreSQL catalog the running daemon copies the job's log into the catalog."""

from __future__ import annotations

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
