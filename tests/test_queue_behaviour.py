"""Queue behaviour a user relies on: priorities, two workers, dependency chains, filters,
the spare child switched off, and a daemon that will not stop on SIGTERM."""

from __future__ import annotations

import json
import signal
import time

import psutil
import pytest

from tests.conftest import add_tiny, run_json, run_mlxd, wait_for


def submit(*args: str) -> int:
    out = run_mlxd(*args, check=True).stdout
    return int(out.split()[2].rstrip(":"))  # "Queued job N: ..."


def job(job_id: int) -> dict:
    return run_json("jobs", "show", str(job_id))


def test_a_failed_link_fails_the_whole_chain(tiny_model_dir):
    add_tiny(tiny_model_dir)
    a = submit("convert", "tiny")
    b = submit("quantize", "tiny-mlx", "--bits", "4", "--after", str(a))
    c = submit("bench", "tiny-mlx-4bit-g64", "--after", str(b))
    run_mlxd("jobs", "cancel", str(a), check=True)
    assert job(a)["status"] == "cancelled"
    assert job(b)["status"] == "failed" and f"prerequisite job {a} cancelled" in job(b)["error"]
    # C waited on B: it fails too, with the root cause (A), not a chain of reasons.
    assert job(c)["status"] == "failed" and f"prerequisite job {a} cancelled" in job(c)["error"]


def test_jobs_list_filters(tiny_model_dir):
    add_tiny(tiny_model_dir)
    q1 = submit("quantize", "tiny", "--bits", "4")
    b1 = submit("bench", "tiny")
    q2 = submit("quantize", "tiny", "--bits", "8")
    run_mlxd("jobs", "cancel", str(q1), check=True)
    ids = lambda *a: [j["id"] for j in run_json("jobs", "list", *a)]  # noqa: E731
    assert ids() == [q1, b1, q2]
    assert ids("--kind", "quantize") == [q1, q2]
    assert ids("--status", "cancelled") == [q1]
    assert ids("--status", "queued", "--kind", "quantize") == [q2]
    assert ids("--limit", "2") == [b1, q2]
    assert ids("--kind", "synth") == []
    bad = run_mlxd("jobs", "list", "--kind", "nosuch")  # a typo is not an empty list
    assert bad.returncode == 2 and "'nosuch' is not one of 'synth'" in bad.stderr


def test_models_rm_files_deletes_a_folder_mlxd_made(mlxd_home):
    run_mlxd("models", "synth", "mini", check=True)
    folder = mlxd_home / "models" / "mini"
    assert (folder / "config.json").exists()
    out = run_mlxd("models", "rm", "mini", "--files", check=True).stdout
    assert f"deleted {folder}" in out
    assert not folder.exists() and run_json("models", "list") == []


@pytest.mark.daemon
def test_higher_priority_runs_first(daemon, tiny_model_dir):
    add_tiny(tiny_model_dir)
    low = submit("quantize", "tiny", "--bits", "4", "--priority", "-5")
    mid = submit("quantize", "tiny", "--bits", "6")
    high = submit("quantize", "tiny", "--bits", "8", "--priority", "5")
    daemon.start()
    run_mlxd(
        "jobs",
        "wait",
        str(low),
        str(mid),
        str(high),
        "--wait-timeout",
        "180",
        check=True,
        timeout=200,
    )
    started = {j: job(j)["started_at"] for j in (low, mid, high)}
    assert sorted(started, key=started.get) == [high, mid, low]


@pytest.mark.daemon
def test_two_workers_run_two_jobs_at_once(daemon, tiny_model_dir, monkeypatch):
    add_tiny(tiny_model_dir)
    daemon.start(workers=2)
    jobs = [submit("bench", "tiny", "-p", "16", "-g", "400", "-n", "3") for _ in range(2)]
    both = wait_for(
        lambda: len(run_json("jobs", "list", "--status", "running")) == 2,
        timeout=60,
        what="two jobs running at once",
    )
    assert both
    for j in jobs:
        run_mlxd("jobs", "wait", str(j), "--wait-timeout", "180", check=True, timeout=200)
    # Both finished through the one finish lock: one bench run per point each, none lost.
    runs = run_json("results")
    assert sorted(r["job_id"] for r in runs) == sorted(jobs)


def _spares(daemon_pid: int) -> list[psutil.Process]:
    kids = psutil.Process(daemon_pid).children(recursive=True)
    return [p for p in kids if any("mlxd.daemon.child" in a for a in p.cmdline())]


@pytest.mark.daemon
def test_the_spare_child_can_be_switched_off(daemon, tiny_model_dir, monkeypatch):
    add_tiny(tiny_model_dir)
    monkeypatch.setenv("MLXD_SPARE_CHILD", "0")
    daemon.start()
    j = submit("quantize", "tiny", "--bits", "4")
    run_mlxd("jobs", "wait", str(j), "--wait-timeout", "120", check=True, timeout=150)
    time.sleep(0.5)  # a spare, if one were started after the job, would be there by now
    assert _spares(daemon.pid) == []


@pytest.mark.daemon
def test_daemon_stop_escalates_to_sigkill(daemon):
    daemon.start()
    pid = daemon.pid
    # A stopped process never runs its SIGTERM handler: only SIGKILL ends it.
    psutil.Process(pid).send_signal(signal.SIGSTOP)
    t0 = time.monotonic()
    proc = run_mlxd("daemon", "stop", "--stop-timeout", "1")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == f"Daemon stopped (pid {pid})"
    assert time.monotonic() - t0 < 30
    daemon.proc.wait(10)  # reaped: it was killed, not left stopped
    assert daemon.proc.returncode == -signal.SIGKILL
    status = run_mlxd("daemon", "status", "--json")
    assert status.returncode == 3 and json.loads(status.stdout)["running"] is False


def test_a_busy_daemon_leaves_its_pools_tasks_in_the_queue():
    """With every slot taken, a pool's worker does not dequeue (another daemon may take the
    task); with one free it does, and the handler's acquire then succeeds."""
    from mlxd.daemon.service import Slots

    taken = []
    slots = Slots(1)
    gated = slots.gate(lambda: taken.append("task") or "task")
    assert slots.acquire(timeout=0)
    assert gated() is None and taken == []  # full: the queue is not touched
    assert not slots.acquire(timeout=0.05)
    slots.release()
    assert gated() == "task" and taken == ["task"]
    assert slots.acquire(timeout=0) and slots.used == 1
