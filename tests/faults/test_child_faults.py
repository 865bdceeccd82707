"""Faults in a job's child and in the spare: SIGSTOP (a hung process), SIGKILL, RLIMIT_AS."""

from __future__ import annotations

import os
import signal
import time

import psutil
import pytest

from mlxd.daemon.runner import time_limit_s

pytestmark = pytest.mark.daemon

# A bench long enough to be caught running, short enough to finish quickly when let be.
LONG_BENCH = {"model": "tiny", "prompt_tokens": [16], "gen_tokens": [300], "trials": 2, "warmup": 0}


def test_a_stopped_child_loses_its_lease_and_runs_once_more(fh_tiny):
    fh_tiny.start()
    j = fh_tiny.queue("bench", **LONG_BENCH)
    child = fh_tiny.wait_running_child(j)
    os.kill(child, signal.SIGSTOP)  # alive to the kernel, silent and idle: a hung job
    final = fh_tiny.wait_job(j, timeout=90)
    assert final["status"] == "succeeded", final
    assert final["crashes"] == 1
    assert "no sign of life for 3 s" in final["crash_reason"]
    assert not psutil.pid_exists(child) or psutil.Process(child).status() == "zombie"
    fh_tiny.assert_consistent()


def test_a_child_killed_twice_fails_with_the_signal_not_a_guess(fh_tiny):
    fh_tiny.start()
    j = fh_tiny.queue("bench", **LONG_BENCH)
    first = fh_tiny.wait_running_child(j)
    os.kill(first, signal.SIGKILL)
    deadline = time.monotonic() + 60
    while (row := fh_tiny.job(j))["pid"] in (None, first) and time.monotonic() < deadline:
        assert row["status"] in ("running", "queued"), row
        time.sleep(0.01)
    assert row["crashes"] == 1 and "signal 9 (SIGKILL)" in row["crash_reason"]
    os.kill(fh_tiny.wait_running_child(j), signal.SIGKILL)
    final = fh_tiny.wait_job(j)
    assert final["status"] == "failed"
    assert final["error"] == (
        "the job's process was killed by signal 9 (SIGKILL) (again, after a retry)"
    )
    assert "memory" not in final["error"]
    # The daemon carries on.
    nxt = fh_tiny.queue("quantize", model="tiny", bits=8)
    assert fh_tiny.wait_job(nxt)["status"] == "succeeded"
    fh_tiny.assert_consistent()


def test_a_stopped_or_killed_spare_never_blocks_a_job(fh_tiny, helpers):
    daemon = fh_tiny.start(MLXD_SPARE_CHILD="1")
    deadline = time.monotonic() + 30
    while not (spares := helpers.spare_pids(daemon.pid)) and time.monotonic() < deadline:
        time.sleep(0.05)
    [spare] = spares
    os.kill(spare, signal.SIGSTOP)
    j = fh_tiny.queue("quantize", model="tiny", bits=4)
    assert fh_tiny.wait_job(j, timeout=180)["status"] == "succeeded"
    assert fh_tiny.job(j)["crashes"] == 0
    deadline = time.monotonic() + 20
    while psutil.pid_exists(spare) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not psutil.pid_exists(spare), "the stopped spare was left behind"
    # A killed spare: reaped (no zombie) and replaced.
    deadline = time.monotonic() + 30
    while not (spares := helpers.spare_pids(daemon.pid)) and time.monotonic() < deadline:
        time.sleep(0.05)
    os.kill(spares[0], signal.SIGKILL)
    j2 = fh_tiny.queue("quantize", model="tiny", bits=8)
    assert fh_tiny.wait_job(j2, timeout=180)["status"] == "succeeded"
    time.sleep(1.5)  # a few housekeeping passes
    assert helpers.zombies(daemon.pid) == []
    fh_tiny.assert_consistent()


def test_an_address_space_limit_is_named_as_such(fh_tiny):
    # 1 GB below what the child has already mapped: every new allocation fails.
    fh_tiny.start(MLXD_JOB_MEMORY_LIMIT_BYTES=str(200_000_000))
    j = fh_tiny.queue("quantize", model="tiny", bits=4)
    final = fh_tiny.wait_job(j, timeout=180)
    assert final["status"] == "failed"
    assert final["error"].startswith("address space limit: the job hit RLIMIT_AS (200.0 MB)")
    assert final["crashes"] == 0  # it would hit the same limit again
    fh_tiny.assert_consistent()


def test_every_kind_has_a_time_limit_that_timeout_overrides():
    from mlxd.jobs import KINDS, load_kind

    for kind in KINDS:
        assert time_limit_s(kind, None) == load_kind(kind).TIME_LIMIT_S > 0
    assert time_limit_s("bench", 5.0) == 5.0
