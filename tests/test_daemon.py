"""The daemon as users meet it: a real background process, a real queue, real MLX jobs."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import psutil
import pytest

from mlxd.catalog.store import Store
from mlxd.config import paths
from tests.conftest import add_tiny, mlxd_env, run_json, run_mlxd, wait_for

pytestmark = pytest.mark.daemon


def submit(*args: str) -> int:
    proc = run_mlxd(*args, check=True)
    # "Queued job N: ..."
    return int(proc.stdout.split()[2].rstrip(":"))


def job(job_id: int) -> dict:
    return run_json("jobs", "show", str(job_id))


def wait_job(job_id: int, timeout: float = 180) -> dict:
    run_mlxd("jobs", "wait", str(job_id), "--timeout", str(timeout), timeout=timeout + 30)
    return job(job_id)


def test_pipeline_convert_quantize_bench(daemon, tiny_model_dir, mlxd_home):
    add_tiny(tiny_model_dir)
    daemon.start()
    conv = submit("convert", "tiny")
    q4 = submit("quantize", "tiny-mlx", "--bits", "4", "--after", str(conv))
    q8 = submit("quantize", "tiny-mlx", "--bits", "8", "--after", str(conv))
    benches = [
        submit("bench", name, "-p", "32", "-g", "8", "-n", "2", "--after", str(after))
        for name, after in (("tiny-mlx", conv), ("tiny-4bit-g64", q4), ("tiny-8bit-g64", q8))
    ]
    for j in [conv, q4, q8, *benches]:
        assert wait_job(j)["status"] == "succeeded", job(j)

    models = {m["name"]: m for m in run_json("models", "list")}
    assert set(models) == {"tiny", "tiny-mlx", "tiny-4bit-g64", "tiny-8bit-g64"}
    assert models["tiny-mlx"]["parent_id"] == models["tiny"]["id"]
    assert models["tiny-mlx"]["format"] == "mlx"
    for bits in (4, 8):
        m = models[f"tiny-{bits}bit-g64"]
        assert m["parent_id"] == models["tiny-mlx"]["id"]
        assert m["quant_bits"] == bits and m["quant_group_size"] == 64
        assert m["created_by_job_id"] in (q4, q8)
        assert (mlxd_home / "models" / m["name"] / "config.json").exists()
    assert models["tiny-4bit-g64"]["bits_per_weight"] < models["tiny-8bit-g64"]["bits_per_weight"]
    assert models["tiny-4bit-g64"]["size_bytes"] < models["tiny-mlx"]["size_bytes"]

    rows = run_json("results")
    assert {r["model"] for r in rows} == {"tiny-mlx", "tiny-4bit-g64", "tiny-8bit-g64"}
    for r in rows:
        assert r["trials"] == 2
        assert r["prompt_tps_mean"] > 0 and r["generation_tps_mean"] > 0
        assert r["ttft_s_mean"] > 0
        assert r["peak_memory_bytes"] > 0 and r["peak_rss_bytes"] > 0
        assert r["mlx_version"] and r["host"]
    # Nothing half-made is left behind.
    assert list((mlxd_home / "models" / ".partial").iterdir()) == []


def _freeze_running_child(store, job_id: int, timeout: float = 30) -> int | None:
    """SIGSTOP the job's child the moment it appears; None if the job ended first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        j = store.get_job(job_id)
        if j.status in ("succeeded", "failed", "cancelled"):
            return None
        if j.status == "running" and j.pid:
            try:
                os.kill(j.pid, signal.SIGSTOP)
            except ProcessLookupError:
                return None
            # Frozen while the catalog still says running: the job is truly mid-way.
            if store.get_job(job_id).status == "running":
                return j.pid
            os.kill(j.pid, signal.SIGCONT)
            return None
        time.sleep(0.005)
    raise AssertionError("the job never started")


def test_kill_9_mid_job_then_restart_finishes_it(daemon, tiny_model_dir, mlxd_home):
    add_tiny(tiny_model_dir)
    daemon.start()
    store = Store(paths(mlxd_home))
    # The job is frozen (SIGSTOP) mid-way so the kill lands during it however fast it is.
    for bits in ("4", "8", "6"):
        j = submit("quantize", "tiny", "--bits", bits)
        child_pid = _freeze_running_child(store, j)
        if child_pid is not None:
            break
        assert job(j)["status"] == "succeeded"
    else:
        raise AssertionError("every job finished before it could be frozen")
    name = f"tiny-{bits}bit-g64"
    assert [m["state"] for m in run_json("machines", "list")] == ["up"]
    daemon.kill9()
    # Its lock is free: the machine reads stopped at once, in `machines list` as in the wait
    # reasons, though its last heartbeat is fresh (hosts.machine_state, one rule for both).
    assert [m["state"] for m in run_json("machines", "list")] == ["stopped"]
    os.kill(child_pid, signal.SIGCONT)
    # The orphaned child notices its daemon is gone and exits by itself.
    wait_for(
        lambda: not psutil.pid_exists(child_pid) or _zombie(child_pid),
        timeout=90,
        what="the orphaned child to exit",
    )
    assert job(j)["status"] == "running"  # nobody has told the catalog yet
    assert name not in [m["name"] for m in run_json("models", "list")]

    daemon.start()
    final = wait_job(j)
    assert final["status"] == "succeeded", final
    # A daemon death is not the job's fault: no attempt is charged (issue 8).
    assert final["attempts"] == 1 and final["interruptions"] == 1
    names = [m["name"] for m in run_json("models", "list")]
    assert names.count(name) == 1
    assert list((mlxd_home / "models" / ".partial").iterdir()) == []
    assert (mlxd_home / "models" / name / "config.json").exists()
    assert (
        "attempt 1, after 1 daemon stop(s)" in run_mlxd("jobs", "logs", str(j), check=True).stdout
    )


def _zombie(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def test_failed_job_has_a_reason_and_the_next_job_runs(daemon, tiny_model_dir, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(tiny_model_dir, broken)
    run_mlxd("models", "add", str(broken), "--name", "broken", check=True)
    add_tiny(tiny_model_dir)
    # Damage the folder after registering it: the weights no longer match the config.
    cfg = json.loads((broken / "config.json").read_text())
    cfg["hidden_size"] = cfg["hidden_size"] * 2
    (broken / "config.json").write_text(json.dumps(cfg))
    daemon.start()
    bad = submit("convert", "broken")
    good = submit("convert", "tiny")
    bad_job = wait_job(bad)
    assert bad_job["status"] == "failed"
    assert bad_job["error"] and "\n" not in bad_job["error"]
    assert "Traceback" not in bad_job["error"]
    assert wait_job(good)["status"] == "succeeded"
    # --wait on a failed job: one Error line, exit 1.
    proc = run_mlxd("jobs", "wait", str(bad))
    assert proc.returncode == 1
    assert proc.stderr.startswith("Error: job") and proc.stderr.count("\n") == 1
    # The full story is in the log.
    assert "Traceback" in run_mlxd("jobs", "logs", str(bad), check=True).stdout
    assert daemon.proc.poll() is None


def test_cancel_running_job_kills_its_child(daemon, tiny_model_dir):
    add_tiny(tiny_model_dir)
    daemon.start()
    j = submit("bench", "tiny", "-p", "64", "-g", "1900", "-n", "100")
    wait_for(lambda: job(j)["status"] == "running" and job(j)["pid"], timeout=90, what="running")
    child = job(j)["pid"]
    proc = run_mlxd("jobs", "cancel", str(j), check=True)
    assert "cancelled" in proc.stdout
    wait_for(lambda: not psutil.pid_exists(child) or _zombie(child), timeout=90, what="child gone")
    final = job(j)
    assert final["status"] == "cancelled"
    # The daemon carries on with the next job.
    nxt = submit("convert", "tiny")
    assert wait_job(nxt)["status"] == "succeeded"


def test_cancel_no_wait_returns_before_the_daemon_stopped_the_job(daemon, tiny_model_dir):
    """`jobs cancel --no-wait` (the dashboard's button) records the request and returns; the
    daemon, paused here (SIGSTOP) so it cannot have acted yet, stops the job once it runs."""
    add_tiny(tiny_model_dir)
    daemon.start()
    j = submit("bench", "tiny", "-p", "64", "-g", "1900", "-n", "100")
    wait_for(lambda: job(j)["status"] == "running" and job(j)["pid"], timeout=90, what="running")
    os.kill(daemon.pid, signal.SIGSTOP)
    try:
        proc = run_mlxd("jobs", "cancel", str(j), "--no-wait", check=True, timeout=20)
        assert (
            proc.stdout.strip() == f"Stopping job {j}: its daemon stops it ('mlxd jobs show {j}')"
        )
        assert job(j)["status"] == "running" and job(j)["cancel_requested"]
    finally:
        os.kill(daemon.pid, signal.SIGCONT)
    wait_for(lambda: job(j)["status"] == "cancelled", timeout=60, what="the job cancelled")


def test_sigterm_requeues_the_running_job(daemon, tiny_model_dir):
    add_tiny(tiny_model_dir)
    daemon.start()
    j = submit("bench", "tiny", "-p", "32", "-g", "2000", "-n", "3")
    wait_for(lambda: job(j)["status"] == "running" and job(j)["pid"], timeout=90, what="running")
    child = job(j)["pid"]
    assert daemon.stop() == 0
    assert not psutil.pid_exists(child) or _zombie(child)
    queued = job(j)
    assert queued["status"] == "queued" and queued["attempts"] == 0
    status = run_mlxd("daemon", "status", "--json")
    assert status.returncode == 3 and json.loads(status.stdout)["running"] is False


def test_dependent_of_a_failed_job_fails_with_that_reason(daemon, tiny_model_dir):
    add_tiny(tiny_model_dir)
    # A timeout of 0.5 s fails a bench that generates 3000 tokens. Both are queued before the
    # daemon starts: a busy machine cannot let the first fail before the second is submitted.
    first = submit("bench", "tiny", "-p", "32", "-g", "2000", "--timeout", "0.5")
    second = submit("quantize", "tiny", "--bits", "8", "--after", str(first))
    daemon.start()
    assert wait_job(first)["status"] == "failed"
    dep = wait_for(
        lambda: job(second)["status"] != "queued" and job(second),
        timeout=90,
        what="the dependent to fail",
    )
    assert dep["status"] == "failed"
    assert f"prerequisite job {first} failed" in dep["error"]
    assert "timed out" in dep["error"]


def test_second_start_says_already_running(daemon):
    daemon.start()
    proc = run_mlxd("daemon", "start")
    assert proc.returncode == 1
    assert proc.stderr.strip() == f"Error: the daemon is already running (pid {daemon.pid})"
    st = run_json("daemon", "status")
    assert st["running"] and st["pid"] == daemon.pid


def _start_foreground_synth(name: str, home) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "mlxd", "models", "synth", name],
        env={**mlxd_env(home), "PYTHONFAULTHANDLER": "1"},
        # SIGINT must work even when the suite runs in the background of a shell without job
        # control (it then starts with SIGINT ignored, and exec keeps that).
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_daemon_start_leaves_a_foreground_job_alone_and_runs_its_dependents(daemon, mlxd_home):
    mlxd_home.mkdir(parents=True, exist_ok=True)
    run_mlxd("jobs", "list", check=True)  # creates the catalog
    store = Store(paths(mlxd_home))
    cli = _start_foreground_synth("fg", mlxd_home)
    wait_for(lambda: store.list_jobs(["running"]), timeout=90, what="the synth job to run")
    [synth] = store.list_jobs(["running"])
    child = _freeze_running_child(store, synth.id)
    assert child is not None, "synth finished before it could be frozen"
    dependent = submit("quantize", "fg", "--bits", "8", "--after", str(synth.id))
    daemon.start()  # its recovery must not take the CLI's running job for a leftover
    assert job(synth.id)["status"] == "running" and psutil.pid_exists(child)
    os.kill(child, signal.SIGCONT)
    out, err = cli.communicate(timeout=120)
    assert cli.returncode == 0, err
    assert "Made model" in out
    # The CLI released the job that waited on its synth; the daemon ran it.
    assert wait_job(dependent)["status"] == "succeeded"


def test_ctrl_c_in_a_foreground_job_cancels_it_and_cleans_up(mlxd_home):
    mlxd_home.mkdir(parents=True, exist_ok=True)
    run_mlxd("jobs", "list", check=True)
    store = Store(paths(mlxd_home))
    cli = _start_foreground_synth("fg", mlxd_home)
    wait_for(lambda: store.list_jobs(["running"]), timeout=90, what="the synth job to run")
    [synth] = store.list_jobs(["running"])
    child = _freeze_running_child(store, synth.id)
    assert child is not None, "synth finished before it could be frozen"
    cli.send_signal(signal.SIGINT)
    try:
        _, err = cli.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        # Once seen under a heavily loaded machine: say where it hangs (faulthandler prints
        # every thread's stack on SIGABRT).
        cli.send_signal(signal.SIGABRT)
        _, err = cli.communicate(timeout=30)
        raise AssertionError(f"the CLI did not stop within 30 s of Ctrl-C:\n{err}") from None
    assert cli.returncode == 130 and err.strip() == "Error: interrupted"
    final = job(synth.id)
    assert final["status"] == "cancelled" and final["error"] == "interrupted"
    wait_for(lambda: not psutil.pid_exists(child) or _zombie(child), timeout=90, what="child gone")
    assert list((mlxd_home / "models" / ".partial").iterdir()) == []


def test_cancel_after_the_daemon_died_ends_the_job_for_good(daemon, tiny_model_dir, mlxd_home):
    add_tiny(tiny_model_dir)
    daemon.start()
    store = Store(paths(mlxd_home))
    j = submit("bench", "tiny", "-p", "32", "-g", "2000", "-n", "5")
    child = _freeze_running_child(store, j)
    assert child is not None
    daemon.kill9()
    os.kill(child, signal.SIGCONT)
    proc = run_mlxd("jobs", "cancel", str(j), timeout=20)
    assert proc.returncode == 0 and f"Cancelled job {j}" in proc.stdout
    daemon.start()
    time.sleep(1)  # the daemon would have picked it up again by now
    final = job(j)
    assert final["status"] == "cancelled" and final["attempts"] == 1
    assert "attempt 2" not in run_mlxd("jobs", "logs", str(j), check=True).stdout


def test_waiting_on_a_queued_job_without_a_daemon_gives_up(tiny_model_dir):
    add_tiny(tiny_model_dir)
    j = submit("convert", "tiny")
    proc = run_mlxd("jobs", "wait", str(j), timeout=60)
    assert proc.returncode == 1
    assert proc.stderr.strip() == (
        f"Error: job {j} is queued but no daemon is running it; start one with 'mlxd daemon start'"
    )


def test_logs_follow_prints_until_the_job_ends(daemon, tiny_model_dir):
    add_tiny(tiny_model_dir)
    daemon.start()
    j = submit("bench", "tiny", "-p", "16", "-g", "200", "-n", "2")
    proc = run_mlxd("jobs", "logs", str(j), "--follow", timeout=120)
    assert proc.returncode == 0
    assert proc.stdout.startswith(f"=== job {j} (bench) attempt 1")
    assert proc.stdout.rstrip().endswith("=== succeeded")
    assert job(j)["status"] == "succeeded"
