"""Admission control: a job that can never fit is refused at submit; one that fits later
waits its turn; a per-user queue limit refuses floods."""

from __future__ import annotations

import time

import pytest


def test_a_job_that_can_never_fit_is_refused_at_submit_and_leaves_no_job(fh_tiny):
    proc = fh_tiny.mlxd(
        "quantize", "tiny", "--bits", "4", check=False, MLXD_MEMORY_BUDGET_BYTES="1000"
    )
    assert proc.returncode == 1
    [line] = proc.stderr.splitlines()
    assert line.startswith("Error: this job needs about ")
    assert "at 4 bits); this machine's budget is 1.0 KB (MLXD_MEMORY_BUDGET_BYTES" in line
    assert fh_tiny.rows("select id from job") == []


def test_a_queue_limit_per_user_refuses_a_flood_politely(fh_tiny):
    limit = {"MLXD_QUEUE_LIMIT_PER_USER": "2"}
    for bits in ("4", "8"):
        assert fh_tiny.mlxd("quantize", "tiny", "--bits", bits, **limit).returncode == 0
    proc = fh_tiny.mlxd("quantize", "tiny", "--bits", "6", check=False, **limit)
    assert proc.returncode == 1
    assert "job(s) queued or running, the limit per user (MLXD_QUEUE_LIMIT_PER_USER=2)" in (
        proc.stderr
    )
    assert len(fh_tiny.rows("select id from job")) == 2


@pytest.mark.daemon
def test_memory_heavy_jobs_wait_their_turn_even_with_two_workers(fh_tiny):
    from mlxd.catalog.store import Store
    from mlxd.config import paths
    from mlxd.scheduling.admission import estimate

    store = Store(paths(fh_tiny.home))
    bench = fh_tiny.queue(
        "bench", model="tiny", prompt_tokens=[16], gen_tokens=[2000], trials=20, warmup=0
    )
    est_bench = estimate("bench", store.get_job(bench).params, store).memory_bytes
    est_quant = estimate("quantize", {"model": "tiny", "bits": 8}, store).memory_bytes
    store.close()
    # Each fits alone; both together do not.
    budget = max(est_bench, est_quant) + min(est_bench, est_quant) // 2
    fh_tiny.start(workers=2, MLXD_MEMORY_BUDGET_BYTES=str(budget))
    fh_tiny.wait_running_child(bench)
    quant = fh_tiny.queue("quantize", model="tiny", bits=8)
    deadline = time.monotonic() + 30
    while not (fh_tiny.job(quant)["message"] or "").startswith("waiting: memory"):
        assert time.monotonic() < deadline, fh_tiny.job(quant)
        time.sleep(0.05)
    assert fh_tiny.job(quant)["status"] == "queued"
    listing = fh_tiny.mlxd("jobs", "list").stdout
    assert "waiting: memory (needs" in listing
    fh_tiny.mlxd("jobs", "cancel", str(bench))
    assert fh_tiny.wait_job(quant, timeout=180)["status"] == "succeeded"
    fh_tiny.assert_consistent()
