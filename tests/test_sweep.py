"""Quantization sweeps: the job graph, reuse of what exists, and the table it fills."""

from __future__ import annotations

import pytest

from mlxd.catalog.models import Model
from mlxd.catalog.read import Reader
from mlxd.catalog.store import Store
from mlxd.config import paths
from mlxd.jobs.sweeps import SweepRequest, new_steps, plan_sweep, record_sweep
from tests.conftest import add_tiny, run_json, run_mlxd


def _store_with_base(tmp_path) -> Store:
    store = Store(paths())
    store.add_model(
        Model(
            name="tiny", path=str(tmp_path / "tiny"), format="mlx", source="synth", dtype="float32"
        )
    )
    return store


def _plan(req: SweepRequest):
    """The sweep's plan, read from the catalog as the sweep command reads it."""
    with Reader(paths()) as reader:
        return plan_sweep(reader, req)


def _queue_sweep(store, plan, log):
    """Queue the plan's new steps in order, each after its variant's quantize job (as the
    command's graph does), logging (kind, job id, after); the Sweep row."""
    for step, gate in new_steps(plan):
        after = gate.job_id if gate is not None else None
        step.job_id = store.submit_job(step.kind, step.spec.to_params(), after_job_id=after).id
        log.append((step.kind, step.job_id, after))
    return record_sweep(store, plan)


def test_plan_queues_a_graph_and_a_second_sweep_reuses_the_queued_jobs(tmp_path):
    store = _store_with_base(tmp_path)
    req = SweepRequest(
        base="tiny",
        bits=[4, 8],
        group_sizes=[64],
        recipes=["mixed_3_6"],
        prompt_tokens=16,
        gen_tokens=8,
        trials=2,
        max_tokens=64,
    )
    first: list = []
    sweep = _queue_sweep(store, _plan(req), first)

    kinds = [k for k, _, _ in first]
    assert kinds.count("quantize") == 3 and kinds.count("bench") == 4
    assert kinds.count("quality") == 4
    by_variant = {v["variant"]: v for v in sweep.variants}
    assert set(by_variant) == {"base", "4bit-g64", "8bit-g64", "mixed_3_6-g64"}
    # bench and quality of a variant wait for its quantize job; the base's run at once
    v4 = by_variant["4bit-g64"]
    assert store.get_job(v4["bench_job"]).after_job_id == v4["quantize_job"]
    assert store.get_job(v4["quality_job"]).after_job_id == v4["quantize_job"]
    assert store.get_job(v4["quality_job"]).params["base"] == "tiny"
    assert store.get_job(by_variant["base"]["bench_job"]).after_job_id is None
    assert store.get_job(by_variant["base"]["quality_job"]).params["base"] is None
    assert store.get_job(v4["quantize_job"]).params["name"] == "tiny-4bit-g64"

    # The same sweep again, while everything is still queued: nothing new.
    second: list = []
    again = _queue_sweep(store, _plan(req), second)
    assert second == []
    assert [v["quantize_job"] for v in again.variants] == [
        v["quantize_job"] for v in sweep.variants
    ]
    assert all("bench" in v["reused"] and "quality" in v["reused"] for v in again.variants)


def test_a_different_model_with_the_default_name_is_not_taken_for_the_variant(tmp_path):
    store = _store_with_base(tmp_path)
    # Same name, but not quantized from tiny: must not be reused, nor overwritten.
    store.add_model(
        Model(
            name="tiny-4bit-g64",
            path=str(tmp_path / "other"),
            format="mlx",
            source="local",
            quant_bits=4,
            quant_group_size=64,
            quant_mode="affine",
        )
    )
    log: list = []
    sweep = _queue_sweep(store, _plan(SweepRequest(base="tiny", bits=[4])), log)
    v = next(v for v in sweep.variants if v["variant"] == "4bit-g64")
    assert v["model"] == "tiny-4bit-g64-2" and v["reused"] == []
    assert store.get_job(v["quantize_job"]).params["name"] == "tiny-4bit-g64-2"


def test_sweep_rejects_bad_grids_before_queueing(tmp_path, tiny_model_dir):
    add_tiny(tiny_model_dir)
    bad = run_mlxd("sweep", "tiny", "--bits", "7")
    assert bad.returncode == 2 and bad.stderr.startswith("Error: --bits must be one of")
    bad = run_mlxd("sweep", "nope", "--bits", "4")
    assert bad.returncode == 2 and "model 'nope' not found" in bad.stderr
    assert run_json("jobs", "list") == []


@pytest.mark.daemon
def test_sweep_end_to_end_fills_every_cell_and_resubmitting_reuses(daemon, tiny_model_dir):
    add_tiny(tiny_model_dir)
    daemon.start()
    args = [
        "sweep",
        "tiny",
        "--bits",
        "4,8",
        "--group-size",
        "64",
        "-p",
        "16",
        "-g",
        "8",
        "-n",
        "2",
        "--text-tokens",
        "64",
    ]
    out = run_mlxd(*args, "--wait", timeout=600)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "Perplexity" in out.stdout and "queued" not in out.stdout.split("Precision")[-1]

    table = run_json("sweep", "show", "1")
    rows = {r["variant"]: r for r in table["rows"]}
    assert list(rows) == ["base", "8bit-g64", "4bit-g64"]  # by bits per weight
    for r in rows.values():
        for col in (
            "perplexity",
            "prompt_tps",
            "generation_tps",
            "peak_memory_gb",
            "size_gb",
            "bits_per_weight",
        ):
            assert isinstance(r[col], float) and r[col] > 0, (r["variant"], col, r[col])
    for name in ("4bit-g64", "8bit-g64"):
        assert isinstance(rows[name]["kl_mean"], float) and rows[name]["kl_mean"] >= 0
    assert rows["4bit-g64"]["bits_per_weight"] < rows["8bit-g64"]["bits_per_weight"]
    assert rows["4bit-g64"]["kl_mean"] > rows["8bit-g64"]["kl_mean"]
    md = run_mlxd("sweep", "show", "1", "--md", check=True).stdout
    assert md.startswith("| Precision | Method | Perplexity | KL |") and md.count("\n") == 5

    models_before = run_json("models", "list")
    jobs_before = run_json("jobs", "list")
    again = run_mlxd(*args, check=True)
    assert "Reused existing variant(s), not quantized again: 4bit-g64, 8bit-g64" in again.stdout
    assert run_json("models", "list") == models_before
    assert run_json("jobs", "list") == jobs_before  # bench and quality results reused too
    second = run_json("sweep", "show", "2")
    assert [r["perplexity"] for r in second["rows"]] == [r["perplexity"] for r in table["rows"]]
    assert [s["id"] for s in run_json("sweep", "list")] == [1, 2]


def test_an_unfinished_sweep_shows_states_in_the_table_and_nulls_in_json(tiny_model_dir):
    add_tiny(tiny_model_dir)
    run_mlxd("sweep", "tiny", "--bits", "4", check=True)  # no daemon: everything stays queued
    rows = {r["variant"]: r for r in run_json("sweep", "show", "1")["rows"]}
    q4 = rows["4bit-g64"]
    assert q4["perplexity"] is None and q4["generation_tps"] is None
    assert q4["bench_status"] == "queued" and q4["quality_status"] == "queued"
    assert "queued" in run_mlxd("sweep", "show", "1", check=True).stdout


def test_a_bench_run_with_other_settings_is_not_reused(tmp_path):
    from mlxd.catalog.models import BenchRun

    store = _store_with_base(tmp_path)
    system = store.system_for(
        {
            "host": "h",
            "os_name": "Linux",
            "os_version": "6",
            "cpu": "x",
            "backend": "cpu",
            "python_version": "3.11",
            "mlx_version": "1",
            "mlx_lm_version": "1",
            "mlxd_version": "0",
        }
    )
    earlier = store.submit_job("bench", {"model": "tiny"})
    # Same p/g/n as the sweep, but another prefill step size and seed: not the sweep's run.
    store.add_bench_run(
        BenchRun(
            job_id=earlier.id,
            model_id=1,
            system_id=system.id,
            prompt_tokens=16,
            gen_tokens=8,
            trials=2,
            warmup=1,
            prefill_step_size=16,
            seed=7,
        ),
        [],
    )
    req = SweepRequest(
        base="tiny",
        bits=[4],
        group_sizes=[64],
        prompt_tokens=16,
        gen_tokens=8,
        trials=2,
        max_tokens=64,
    )
    log: list = []
    sweep = _queue_sweep(store, _plan(req), log)
    base = next(v for v in sweep.variants if v["variant"] == "base")
    assert base["bench_job"] != earlier.id and "bench" not in base["reused"]


def test_repeated_grid_values_make_one_variant(tiny_model_dir):
    add_tiny(tiny_model_dir)
    out = run_mlxd("sweep", "tiny", "--bits", "8,8", "--group-size", "64,64", check=True).stdout
    variants = [v["variant"] for v in run_json("sweep", "show", "1")["rows"]]
    assert variants == ["base", "8bit-g64"], out
