"""`mlxd demo`, as `make demo` runs it: background daemon, the whole chain, results, stop."""

from __future__ import annotations

import json

import pytest

from tests.conftest import run_json, run_mlxd

pytestmark = pytest.mark.daemon


def test_demo_runs_the_chain_and_leaves_the_catalog(mlxd_home):
    proc = run_mlxd("demo", "-p", "32", "-g", "8", "-n", "2", timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = proc.stdout
    assert "Started the daemon" in out and "Stopped the daemon the demo started" in out
    for name in ("tiny-mlx", "tiny-4bit-g64", "tiny-8bit-g64"):
        assert name in out
    # The daemon the demo started is gone; what it learned stays.
    status = run_mlxd("daemon", "status", "--json")
    assert status.returncode == 3 and json.loads(status.stdout)["running"] is False
    rows = run_json("results")
    assert sorted(r["model"] for r in rows) == ["tiny-4bit-g64", "tiny-8bit-g64", "tiny-mlx"]
    assert all(r["generation_tps_mean"] > 0 for r in rows)
    jobs = run_json("jobs", "list")
    assert {j["status"] for j in jobs} == {"succeeded"}
    # A second run reuses the models and benchmarks them again.
    again = run_mlxd("demo", "-p", "32", "-g", "8", "-n", "2", timeout=600)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "Using the existing model 'tiny-4bit-g64'" in again.stdout
    assert len(run_json("results")) == 6
