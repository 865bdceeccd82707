"""Faults in the daemon itself: signals, a restart storm, a death between rename and commit,
a reused pid from another home, a poison pill."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import psutil
import pytest

pytestmark = pytest.mark.daemon

LONG_BENCH = {"model": "tiny", "prompt_tokens": [16], "gen_tokens": [300], "trials": 2, "warmup": 0}


def test_sigterm_twice_requeues_the_job_without_charging_it(fh_tiny):
    daemon = fh_tiny.start()
    j = fh_tiny.queue("bench", **LONG_BENCH)
    child = fh_tiny.wait_running_child(j)
    daemon.send_signal(signal.SIGTERM)
    time.sleep(0.05)
    daemon.send_signal(signal.SIGTERM)
    assert daemon.wait(30) == 0
    row = fh_tiny.job(j)
    assert row["status"] == "queued" and row["attempts"] == 0, row
    assert not psutil.pid_exists(child) or psutil.Process(child).status() == "zombie"
    fh_tiny.start()
    assert fh_tiny.wait_job(j)["status"] == "succeeded"
    fh_tiny.assert_consistent()


def test_sighup_restarts_in_place_without_a_zombie_spare(fh_tiny, helpers):
    daemon = fh_tiny.start(MLXD_SPARE_CHILD="1")
    deadline = time.monotonic() + 30
    while not helpers.spare_pids(daemon.pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    [old_spare] = helpers.spare_pids(daemon.pid)
    for _ in range(2):
        starts = fh_tiny.daemon_log().count("mlxd daemon started")
        daemon.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 60
        while fh_tiny.daemon_log().count("mlxd daemon started") == starts:
            assert time.monotonic() < deadline and daemon.poll() is None
            time.sleep(0.05)
    assert not psutil.pid_exists(old_spare)
    j = fh_tiny.queue("quantize", model="tiny", bits=4)
    assert fh_tiny.wait_job(j)["status"] == "succeeded"
    time.sleep(1)
    assert helpers.zombies(daemon.pid) == []
    assert len(helpers.spare_pids(daemon.pid)) <= 1
    fh_tiny.assert_consistent()


def test_restart_storm_with_two_workers_charges_no_attempts(fh_tiny):
    jobs = [
        fh_tiny.queue("quantize", model="tiny", bits=bits, group_size=gs)
        for bits in (4, 8)
        for gs in (32, 64)
    ]
    kills = 0
    for _ in range(3):
        daemon = fh_tiny.start(workers=2)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if fh_tiny.rows("select id from job where status = 'running' and pid is not null"):
                break
            time.sleep(0.01)
        else:
            break  # nothing left to run
        fh_tiny.kill(daemon)
        kills += 1
    assert kills >= 2
    fh_tiny.start(workers=2)
    finals = [fh_tiny.wait_job(j, timeout=180) for j in jobs]
    assert [f["status"] for f in finals] == ["succeeded"] * len(jobs), finals
    assert all(f["attempts"] == 1 for f in finals), [(f["id"], f["attempts"]) for f in finals]
    assert sum(f["interruptions"] for f in finals) >= 1
    assert len(fh_tiny.models()) == 1 + len(jobs)
    fh_tiny.assert_consistent()


def test_a_death_between_rename_and_commit_is_adopted_at_start(fh_tiny):
    daemon = fh_tiny.start(MLXD_FAULT_POINT="after-rename")
    j = fh_tiny.queue("quantize", model="tiny", bits=4)
    assert daemon.wait(60) == -signal.SIGKILL
    folder = fh_tiny.home / "models" / "tiny-4bit-g64"
    assert (folder / "config.json").exists() and "tiny-4bit-g64" not in fh_tiny.models()
    fh_tiny.start()
    final = fh_tiny.wait_job(j)
    assert final["status"] == "succeeded" and final["attempts"] == 1
    assert "adopted" in fh_tiny.daemon_log()
    assert fh_tiny.models().count("tiny-4bit-g64") == 1
    assert not (folder / ".mlxd-commit.json").exists()
    fh_tiny.assert_consistent()


def test_a_folder_whose_job_is_gone_is_removed_at_start(fh_tiny):
    daemon = fh_tiny.start(MLXD_FAULT_POINT="after-rename")
    j = fh_tiny.queue("quantize", model="tiny", bits=8)
    daemon.wait(60)
    # Someone cancels the job while no daemon runs: nobody will adopt its folder.
    assert fh_tiny.mlxd("jobs", "cancel", str(j)).returncode == 0
    fh_tiny.start()
    deadline = time.monotonic() + 30
    while (fh_tiny.home / "models" / "tiny-8bit-g64").exists():
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert fh_tiny.job(j)["status"] == "cancelled"
    fh_tiny.assert_consistent()


def _insert_running(fh, pid, started, interruptions=0) -> int:
    """A job row left 'running' by a daemon that is gone (pid 1 is never ours)."""
    from mlxd.catalog.store import Store
    from mlxd.config import paths

    store = Store(paths(fh.home))
    params = {
        "model": "tiny",
        "bits": 4,
        "group_size": 64,
        "mode": "affine",
        "recipe": None,
        "dtype": None,
        "name": "tiny-4bit-g64",
        "model_id": None,
    }
    job = store.submit_job("quantize", params)
    store.update_job(
        job.id,
        status="running",
        attempts=1,
        pid=pid,
        pid_started_at=started,
        daemon_pid=2**22 + 7,  # no such process
        interruptions=interruptions,
    )
    store.close()
    return job.id


def test_recovery_spares_another_homes_process_and_fails_a_poison_pill(fh_tiny, tmp_path):
    other = tmp_path / "other-home"
    # Looks like a job child to a careless eye: same command-line marker, same user.
    decoy = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(120)", "mlxd.daemon.child"],
        env=dict(os.environ, MLXD_HOME=str(other)),
    )
    fh_tiny.extra.append(decoy)
    started = psutil.Process(decoy.pid).create_time()
    j = _insert_running(fh_tiny, decoy.pid, started)  # even its start time matches
    # A job that was running at four daemon deaths already: this is the fifth.
    pill = _insert_running(fh_tiny, None, None, interruptions=4)
    fh_tiny.start()
    assert fh_tiny.wait_job(pill, timeout=30)["error"] == (
        "poison pill: the daemon died 5 times in a row while this job ran; not run again"
    )
    final = fh_tiny.wait_job(j)
    assert final["status"] == "succeeded" and final["interruptions"] == 1
    assert final["attempts"] == 1
    assert decoy.poll() is None, "recovery killed another home's process"
    fh_tiny.assert_consistent()
