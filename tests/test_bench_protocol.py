"""The benchmark protocol: statistics on known numbers, and a real bench job's rows."""

from __future__ import annotations

import math

import pytest

from mlxd.catalog.models import Job
from mlxd.catalog.store import Store
from mlxd.config import paths
from mlxd.daemon.runner import Runner
from mlxd.jobs import bench
from mlxd.jobs.base import FinishContext
from mlxd.vocab.errors import SpecError
from mlxd.vocab.stats import summarize, t95


def test_summary_against_hand_worked_numbers():
    s = summarize([10.0, 12.0, 14.0])
    assert s.mean == 12.0 and s.median == 12.0
    assert s.std == pytest.approx(2.0)  # sqrt(((-2)^2 + 0 + 2^2) / (3 - 1))
    assert s.ci95 == pytest.approx(4.303 * 2.0 / math.sqrt(3))  # t(0.975, 2 dof) = 4.303
    assert s.cv == pytest.approx(2.0 / 12.0)
    one = summarize([5.0])
    assert one.std == 0.0 and math.isnan(one.ci95)
    assert t95(1) == 12.706 and t95(10) == 2.228 and t95(1000) == 1.96
    assert t95(22) == t95(20)  # between table rows: the more conservative value
    with pytest.raises(ValueError, match="no values to summarize"):
        summarize([])


def _trial(point, i, prompt_tps, gen_tps, ttft):
    return {
        "point": point,
        "trial_index": i,
        "prompt_tps": prompt_tps,
        "generation_tps": gen_tps,
        "ttft_s": ttft,
        "total_s": 1.0,
        "peak_memory_bytes": 1000 + i,
        "active_memory_bytes": 10,
        "cache_memory_bytes": 5,
        "peak_rss_bytes": 2000 + i,
        "prompt_tokens": point["prompt_tokens"],
        "generated_tokens": point["gen_tokens"],
    }


def test_runs_are_grouped_per_point_and_flagged_noisy(tmp_path):
    store = Store(paths(tmp_path / "h"))
    from mlxd.catalog.models import Model

    model = store.add_model(Model(name="m", path="/m", format="mlx", source="local"))
    job = store.submit_job("bench", {"model": "m"})
    steady = {
        "prompt_tokens": 16,
        "gen_tokens": 8,
        "batch_size": 1,
        "depth": 0,
        "kv_bits": None,
        "prefill_step_size": 2048,
    }
    shaky = dict(steady, prompt_tokens=32)
    result = {
        "trials": [
            _trial(steady, 0, 100.0, 50.0, 0.10),
            _trial(steady, 1, 101.0, 50.5, 0.10),
            _trial(steady, 2, 99.0, 49.5, 0.10),
            _trial(shaky, 0, 100.0, 50.0, 0.10),
            _trial(shaky, 1, 100.0, 80.0, 0.10),  # generation varies by ~28%
            _trial(shaky, 2, 100.0, 50.0, 0.10),
        ],
        "load_time_s": 0.5,
        "model_memory_bytes": 123,
        "system_available_before_bytes": 10_000,
        "system_available_after_bytes": 9_000,
        "power": {"power_source": "ac", "low_power_mode": False, "thermal_state": "nominal"},
        "system": {
            "host": "h",
            "os_name": "Darwin",
            "os_version": "15.1",
            "cpu": "Apple M3",
            "backend": "metal",
            "python_version": "3.12",
            "mlx_version": "0.32",
            "mlx_lm_version": "0.32",
            "mlxd_version": "0.1",
        },
    }
    spec = bench.Spec(model="m", model_id=model.id, prompt_tokens=[16, 32], gen_tokens=[8])
    with store.write() as s:
        fin = FinishContext(store, s, s.get(Job, job.id), None)
        bench.finish(spec, {"model_id": model.id}, result, fin)
    runs = {r.prompt_tokens: r for r in store.bench_runs()}
    assert set(runs) == {16, 32}
    assert runs[16].noisy is False and runs[32].noisy is True
    assert runs[32].details["noisy_metrics"] == ["generation_tps"]
    assert runs[16].generation_tps_mean == pytest.approx(50.0)
    assert runs[16].generation_tps_ci95 == pytest.approx(4.303 * 0.5 / math.sqrt(3))
    assert runs[16].peak_memory_bytes == 1002 and runs[16].peak_rss_bytes == 2002
    assert runs[16].power_source == "ac" and runs[16].thermal_state == "nominal"
    assert runs[16].system_available_after_bytes == 9_000
    assert len(store.trials(runs[32].id)) == 3


@pytest.mark.parametrize(
    "kwargs,message",
    [
        ({"prompt_tokens": [0]}, "prompt tokens must be positive"),
        ({"kv_bits": [7]}, "--kv-bits must be one of"),
        ({"trials": 0}, "--trials must be at least 1"),
        ({"depth": [-1]}, "depth must be zero or more"),
        ({"noise_threshold": 2.0}, "--noise-threshold must be between 0 and 1"),
        ({"gen_tokens": [1, 8]}, "-g must be at least 2 tokens"),
        ({"batch_size": [1, 2], "kv_bits": [4]}, "--batch-size above 1 cannot be combined"),
        ({"batch_size": [2], "depth": [0, 64]}, "--batch-size above 1 cannot be combined"),
    ],
)
def test_bad_bench_specs_are_refused(kwargs, message):
    with pytest.raises(SpecError, match=message):
        bench.Spec(model="m", **kwargs)


def test_real_bench_job_stores_trials_per_point(tmp_path, tiny_model_dir):
    """A real child process benchmarks -p 16,32 -g 8 -n 2, plus depth and kv-bits points."""
    p = paths(tmp_path / "h")
    store = Store(p)
    from mlxd.catalog.models import Model

    model = store.add_model(
        Model(name="tiny", path=str(tiny_model_dir), format="hf", source="local")
    )
    spec = bench.Spec(
        model="tiny", model_id=model.id, prompt_tokens=[16, 32], gen_tokens=[8], trials=2, warmup=1
    )
    job = store.submit_job("bench", spec.to_params())
    outcome = Runner(store, p).handle(job.id)
    assert outcome.status == "succeeded", outcome
    runs = store.bench_runs()
    assert sorted(r.prompt_tokens for r in runs) == [16, 32]
    for r in runs:
        trials = store.trials(r.id)
        assert len(trials) == 2
        assert all(t.generated_tokens == 8 for t in trials)  # EOS ignored: exactly -g tokens
        assert all(t.prompt_tps > 0 and t.generation_tps > 0 for t in trials)
        assert r.peak_memory_bytes > 0 and r.model_memory_bytes > 0
        assert r.system_available_before_bytes > 0

    deep = bench.Spec(
        model="tiny",
        model_id=model.id,
        prompt_tokens=[16],
        gen_tokens=[4],
        depth=[0, 64],
        kv_bits=[None, 8],
        trials=1,
        warmup=0,
    )
    job2 = store.submit_job("bench", deep.to_params())
    assert Runner(store, p).handle(job2.id).status == "succeeded"
    points = {(r.depth, r.kv_bits) for r in store.bench_runs() if r.job_id == job2.id}
    assert points == {(0, None), (0, 8), (64, None), (64, 8)}
