"""mlxd doctor: finds what the faults leave behind, says what to do, fixes the safe ones."""

from __future__ import annotations

import json

import pytest

from mlxd.catalog.schema import HEAD_REVISION


def _damaged_home(fh):
    """A home after a bad night: a row huey never got, a dead daemon's running job, a partial
    folder and a folder nobody registered."""
    from mlxd.catalog.store import Store
    from mlxd.config import paths
    from mlxd.jobs.quantize import Spec

    store = Store(paths(fh.home))
    queued = store.submit_job("quantize", Spec(model="tiny", bits=8).to_params())
    running = store.submit_job("quantize", Spec(model="tiny", bits=4).to_params())
    store.update_job(running.id, status="running", attempts=1, daemon_pid=2**22 + 7)
    store.close()
    (fh.home / "models" / ".partial" / "job-9-attempt-1").mkdir(parents=True)
    stray = fh.home / "models" / "stray"
    stray.mkdir()
    (stray / "config.json").write_text("{}")
    return queued.id, running.id


def test_doctor_reports_each_problem_with_what_to_do(fh_tiny):
    queued, running = _damaged_home(fh_tiny)
    proc = fh_tiny.mlxd("doctor", "--no-mlx", check=False)
    assert proc.returncode == 1
    out = proc.stdout
    assert f"ok    catalog: schema {HEAD_REVISION}, integrity ok" in out
    assert (
        f"FAIL  queued jobs: job(s) {queued} are queued in the catalog but not in the queue" in out
    )
    assert f"FAIL  running jobs: job(s) {running} are running but their daemon is gone" in out
    assert "FAIL  partial folders: 1 unfinished output folder(s)" in out
    assert "FAIL  folders without rows: 1 folder(s)" in out and "stray" in out
    assert "FAIL  daemon: not running" in out
    assert out.count("(mlxd doctor --fix does this)") == 3


def test_doctor_fix_repairs_the_safe_ones_and_leaves_user_folders(fh_tiny):
    queued, running = _damaged_home(fh_tiny)
    proc = fh_tiny.mlxd("doctor", "--no-mlx", "--fix", check=False)
    assert "fixed: enqueued job(s)" in proc.stdout
    assert f"fixed: queued job(s) {running} again" in proc.stdout
    assert fh_tiny.job(running)["status"] == "queued"
    assert fh_tiny.job(running)["attempts"] == 0  # a dead daemon charges nothing
    assert not (fh_tiny.home / "models" / ".partial" / "job-9-attempt-1").exists()
    assert (fh_tiny.home / "models" / "stray").exists()  # never deleted by --fix
    report = json.loads(fh_tiny.mlxd("doctor", "--no-mlx", "--json", check=False).stdout)
    failing = {f["check"] for f in report if not f["ok"]}
    assert failing == {"daemon", "folders without rows"}


@pytest.mark.daemon
def test_doctor_sees_a_live_daemon_and_a_stopped_one(fh_tiny):
    import os
    import signal

    daemon = fh_tiny.start()
    report = json.loads(fh_tiny.mlxd("doctor", "--no-mlx", "--json", check=False).stdout)
    assert {f["check"]: f["ok"] for f in report}["daemon"] is True
    os.kill(daemon.pid, signal.SIGSTOP)  # holds its lock, does nothing
    try:
        alive = fh_tiny.home / "daemon.alive"
        os.utime(alive, (alive.stat().st_atime - 60, alive.stat().st_mtime - 60))
        proc = fh_tiny.mlxd("doctor", "--no-mlx", check=False)
        assert proc.returncode == 1
        assert f"FAIL  daemon: pid {daemon.pid} holds the lock but its housekeeping last ran" in (
            proc.stdout
        )
    finally:
        os.kill(daemon.pid, signal.SIGCONT)
