"""`mlxd bench --serve` through a real daemon: mlx_lm.server under concurrent clients."""

from __future__ import annotations

import re

import psutil
import pytest

from mlxd.catalog.store import Store
from mlxd.config import paths
from tests.conftest import add_tiny, run_json, run_mlxd, wait_for

pytestmark = pytest.mark.daemon
pytest.importorskip("mlx_lm")


def submit(*args: str) -> int:
    proc = run_mlxd(*args, check=True)
    return int(proc.stdout.split()[2].rstrip(":"))  # "Queued job N: ..."


def server_pid(job_id: int) -> int | None:
    log_path = paths().job_log(job_id)
    log = log_path.read_text() if log_path.exists() else ""
    m = re.search(r"mlx_lm\.server pid (\d+)", log)
    return int(m.group(1)) if m else None


def gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def test_serving_bench_records_every_request_and_stops_the_server(daemon, tiny_model_dir):
    add_tiny(tiny_model_dir)
    daemon.start()
    proc = run_mlxd(
        "bench",
        "tiny",
        "--serve",
        "--concurrency",
        "1,4",
        "--requests",
        "6",
        "-p",
        "16",
        "-g",
        "6",
        "--wait",
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    job_id = int(proc.stdout.split()[2].rstrip(":"))
    runs = run_json("results")
    assert [(r["mode"], r["concurrency"]) for r in runs] == [("serve", 1), ("serve", 4)]
    store = Store(paths())
    for r in runs:
        assert r["requests"] == 6 and r["errors"] == 0 and r["trials"] == 6
        assert 0 < r["ttft_p50_s"] <= r["ttft_p95_s"] <= r["ttft_p99_s"]
        assert 0 < r["itl_p50_s"] <= r["itl_p95_s"] <= r["itl_p99_s"]
        assert r["generation_tps_mean"] > 0 and r["request_tps_mean"] > 0
        trials = store.trials(r["run_id"])
        assert len(trials) == 6 and all(t.ttft_s > 0 and t.generated_tokens > 1 for t in trials)
    store.close()
    table = run_mlxd("results", check=True).stdout
    assert "serve c=1" in table and "serve c=4" in table
    # --wait ends with the serving headline: latency percentiles per concurrency.
    headline = proc.stdout[proc.stdout.index("Serving 'tiny' (mlx_lm.server), -p 16 -g 6") :]
    lines = headline.splitlines()
    assert lines[1].split()[:4] == ["CLIENTS", "REQUESTS", "ERRORS", "TOTAL"]
    assert "TTFT P50 S" in lines[1] and "ITL P99 MS" in lines[1]
    for line, r in zip(lines[2:4], runs, strict=True):
        cells = line.split()
        assert cells[:3] == [str(r["concurrency"]), "6", "0"]
        assert cells[4:7] == [f"{r[f'ttft_{p}_s']:.3f}" for p in ("p50", "p95", "p99")]
    pid = server_pid(job_id)
    assert pid is not None and gone(pid)


def test_cancelling_a_serving_bench_stops_its_server(daemon, tiny_model_dir):
    add_tiny(tiny_model_dir)
    daemon.start()
    j = submit(
        "bench",
        "tiny",
        "--serve",
        "--concurrency",
        "2",
        "--requests",
        "5000",
        "-p",
        "16",
        "-g",
        "64",
    )
    store = Store(paths())
    # Cancel once the server is up and answering (progress counts finished requests).
    wait_for(
        lambda: store.get_job(j).progress > 0, timeout=120, interval=0.1, what="requests under way"
    )
    pid = server_pid(j)
    assert pid is not None and not gone(pid)
    run_mlxd("jobs", "cancel", str(j), check=True)
    wait_for(lambda: store.get_job(j).status == "cancelled", timeout=90, what="job cancelled")
    wait_for(lambda: gone(pid), timeout=90, what="server gone")
    assert store.bench_runs() == []
    store.close()
