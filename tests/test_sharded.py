"""A model sharded over two ranks (tensor parallel) under mlx.launch, ring backend over
127.0.0.1 (issue 13): both ranks report their own peak memory."""

from __future__ import annotations

import pytest


def test_two_ranks_on_127_0_0_1_record_both_ranks_memory(tiny_model_dir):
    from mlxd.engine.sharded import bench_sharded

    one = bench_sharded(tiny_model_dir, ranks=1, prompt_tokens=16, gen_tokens=8)
    two = bench_sharded(tiny_model_dir, ranks=2, prompt_tokens=16, gen_tokens=8)
    assert [r.rank for r in two.per_rank] == [0, 1]
    assert all(r.ranks == 2 for r in two.per_rank)
    assert all(r.peak_memory_bytes > 0 and r.generation_tps > 0 for r in two.per_rank)
    # Each rank holds half of the sharded weights: less than the whole model on one rank.
    assert max(r.peak_memory_bytes for r in two.per_rank) < one.per_rank[0].peak_memory_bytes
    assert two.backend == "ring" and two.generation_tps == two.per_rank[0].generation_tps


def test_a_failing_launch_is_one_line(tmp_path):
    from mlxd.engine.sharded import ShardedError, bench_sharded

    with pytest.raises(ShardedError, match=r"^mlx.launch exited"):
        bench_sharded(tmp_path / "no-model", ranks=2, prompt_tokens=4, gen_tokens=2)


def test_bench_ranks_2_records_one_run_with_each_ranks_memory(daemon, tiny_model_dir):
    from tests.conftest import add_tiny, run_json, run_mlxd

    add_tiny(tiny_model_dir)
    daemon.start()
    out = run_mlxd("bench", "tiny", "--ranks", "2", "-p", "16", "-g", "8", "--wait", check=True)
    assert "Queued job" in out.stdout
    [job] = run_json("jobs", "list")
    assert job["kind"] == "bench_sharded" and job["status"] == "succeeded"
    from mlxd.catalog.read import Reader
    from mlxd.config import paths

    with Reader(paths()) as reader:
        [run] = reader.rows("benchrun", "select * from benchrun")
    details = run.details
    assert details["ranks"] == 2 and details["backend"] == "ring"
    assert len(details["placement"]) == 2
    peaks = [r["peak_memory_bytes"] for r in details["per_rank"]]
    assert len(peaks) == 2 and all(p > 0 for p in peaks)
    assert run.peak_memory_bytes == max(peaks) and run.generation_tps_mean > 0


def test_bench_ranks_refuses_a_grid(mlxd_home, tiny_model_dir):
    from tests.conftest import add_tiny, run_mlxd

    add_tiny(tiny_model_dir)
    proc = run_mlxd("bench", "tiny", "--ranks", "2", "-p", "16,32")
    assert proc.returncode == 2
    assert proc.stderr.strip() == (
        "Error: --ranks measures one point: give one -p and one -g value"
    )
