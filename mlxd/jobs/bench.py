"""bench: speed and memory of a model, over a grid of points, model loaded once."""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Any

from mlxd.jobs.base import (
    FinishContext,
    ModelRefSpec,
    RunContext,
    SpecError,
    resolve_input_model,
)
from mlxd.jobs.choices import BENCH_POINT_KEYS, DEFAULT_PREFILL_STEP_SIZE, KV_BITS

PRODUCES_MODEL = False
QUIET = True  # measures speed: nothing else may use the CPU meanwhile
TIME_LIMIT_S = 6 * 3600  # the default of --timeout


@dataclass
class Spec(ModelRefSpec):
    prompt_tokens: list[int] = field(default_factory=lambda: [512])
    gen_tokens: list[int] = field(default_factory=lambda: [128])
    batch_size: list[int] = field(default_factory=lambda: [1])
    depth: list[int] = field(default_factory=lambda: [0])
    kv_bits: list[int | None] = field(default_factory=lambda: [None])
    prefill_step_size: list[int] = field(default_factory=lambda: [DEFAULT_PREFILL_STEP_SIZE])
    max_kv_size: list[int | None] = field(default_factory=lambda: [None])
    # llama-bench's -pg: extra (prompt, gen) pairs, crossed with the other dimensions only
    prompt_gen: list[list[int]] = field(default_factory=list)
    trials: int = 3
    warmup: int = 1
    seed: int = 0
    delay_s: float = 0.0
    # A run whose coefficient of variation (std/mean) of prompt tok/s, generation tok/s or
    # time to first token exceeds this is flagged noisy.
    noise_threshold: float = 0.05
    # With an adapter the job measures, side by side and interleaved, the model alone, the
    # model + the adapter unfused, and the model fused from the adapter if the catalog has one.
    adapter: str | None = None
    adapter_id: int | None = None

    def __post_init__(self):
        for name in ("prompt_tokens", "gen_tokens", "batch_size", "prefill_step_size"):
            values = getattr(self, name)
            if not values or any(int(v) < 1 for v in values):
                raise SpecError(f"{name.replace('_', ' ')} must be positive whole numbers")
        if any(int(d) < 0 for d in self.depth):
            raise SpecError("depth must be zero or more tokens")
        if any(int(g) < 2 for g in self.gen_tokens):
            # mlx-lm's generation speed is measured from the first token to the last.
            raise SpecError("-g must be at least 2 tokens to measure a generation speed")
        if any(b > 1 for b in self.batch_size) and (
            any(self.depth) or any(k is not None for k in self.kv_bits)
        ):
            raise SpecError(
                "--batch-size above 1 cannot be combined with --depth or --kv-bits "
                "(mlx-lm's batch generation has no pre-filled or quantized cache)"
            )
        if any(m is not None and int(m) < 1 for m in self.max_kv_size):
            raise SpecError("--max-kv-size must be a positive number of tokens")
        if any(b > 1 for b in self.batch_size) and any(m is not None for m in self.max_kv_size):
            raise SpecError("--batch-size above 1 cannot be combined with --max-kv-size")
        for pair in self.prompt_gen:
            if len(pair) != 2 or int(pair[0]) < 1 or int(pair[1]) < 2:
                raise SpecError("-pg takes PROMPT,GEN: a positive prompt and at least 2 tokens")
        if any(k is not None and k not in KV_BITS for k in self.kv_bits):
            raise SpecError(f"--kv-bits must be one of {', '.join(map(str, KV_BITS))}")
        if self.trials < 1:
            raise SpecError("--trials must be at least 1")
        if self.warmup < 0:
            raise SpecError("--warmup must be zero or more")
        if self.delay_s < 0:
            raise SpecError("--delay must be zero or more seconds")
        if not 0 < self.noise_threshold < 1:
            raise SpecError("--noise-threshold must be between 0 and 1 (e.g. 0.05 for 5%)")

    def points(self) -> list[dict[str, Any]]:
        rest = (self.batch_size, self.depth, self.kv_bits, self.prefill_step_size, self.max_kv_size)
        pairs = list(itertools.product(self.prompt_tokens, self.gen_tokens))
        pairs += [tuple(p) for p in self.prompt_gen if tuple(p) not in pairs]
        grid = (pair + other for pair in pairs for other in itertools.product(*rest))
        return [dict(zip(BENCH_POINT_KEYS, values, strict=True)) for values in grid]


def describe(spec: Spec) -> str:
    p = ",".join(map(str, spec.prompt_tokens))
    g = ",".join(map(str, spec.gen_tokens))
    out = f"bench {spec.model} -p {p} -g {g}"
    # Every grid dimension that is not at its default, as the command line would say it.
    for flag, values, default in (
        ("-b", spec.batch_size, [1]),
        ("--depth", spec.depth, [0]),
        ("--kv-bits", spec.kv_bits, [None]),
        ("--prefill-step-size", spec.prefill_step_size, [DEFAULT_PREFILL_STEP_SIZE]),
        ("--max-kv-size", spec.max_kv_size, [None]),
    ):
        if list(values) != default:
            out += f" {flag} {','.join(str(v) for v in values)}"
    for p_tok, g_tok in spec.prompt_gen:
        out += f" -pg {p_tok},{g_tok}"
    if spec.adapter:
        out += f" --adapter {spec.adapter}"
    return out + f" -n {spec.trials}"


def prepare(spec: Spec, store, job=None) -> dict[str, Any]:
    inputs = resolve_input_model(spec, store)
    if spec.adapter is not None:
        from mlxd.jobs.finetune_use import adapter_inputs

        ref = spec.adapter_id if spec.adapter_id is not None else spec.adapter
        inputs.update(adapter_inputs(store, ref, inputs["model_id"], with_fused=True))
    return inputs


def variants(inputs: dict[str, Any]) -> list[tuple[str, str, str | None]]:
    """(label, model folder, adapter folder) of each side of an adapter bench; [] without."""
    if not inputs.get("adapter_path"):
        return []
    out = [
        ("base", inputs["model_path"], None),
        ("adapter", inputs["model_path"], inputs["adapter_path"]),
    ]
    if inputs.get("fused_path"):
        out.append(("fused", inputs["fused_path"], None))
    return out


def run(spec: Spec, inputs: dict[str, Any], ctx: RunContext) -> dict[str, Any]:
    import dataclasses
    from pathlib import Path

    import psutil

    from mlxd.engine.bench import bench_model
    from mlxd.engine.types import BenchPoint, BenchVariant
    from mlxd.system.sysinfo import power_state, system_facts

    points = [BenchPoint(**p) for p in spec.points()]
    sides = [BenchVariant(*v) for v in variants(inputs)]
    ctx.progress(0.0, f"loading {inputs['model_name']}")
    available_before = psutil.virtual_memory().available
    result = bench_model(
        Path(inputs["model_path"]),
        points,
        trials=spec.trials,
        warmup=spec.warmup,
        seed=spec.seed,
        delay_s=spec.delay_s,
        on_progress=ctx.progress,
        on_trial=_log_trial,
        variants=sides or None,
    )
    out = dataclasses.asdict(result)
    out["system_available_before_bytes"] = available_before
    out["system_available_after_bytes"] = psutil.virtual_memory().available
    out["system"] = system_facts()
    out["power"] = power_state()
    return out


def _log_trial(t) -> None:
    """One line per measured trial in the job's log (the child's stderr goes there)."""
    import sys

    p = t.point
    side = f"[{t.variant}] " if t.variant else ""
    print(
        f"{side}trial {t.trial_index + 1} p={p.prompt_tokens} g={p.gen_tokens} b={p.batch_size} "
        f"depth={p.depth} kv_bits={p.kv_bits} max_kv={p.max_kv_size}: prompt {t.prompt_tps:.1f} tok/s, generation "
        f"{t.generation_tps:.1f} tok/s, ttft {t.ttft_s:.4f} s, peak {t.peak_memory_bytes:,} B",
        file=sys.stderr,
        flush=True,
    )


def finish(spec: Spec, inputs: dict[str, Any], result: dict[str, Any], fin: FinishContext) -> None:
    from mlxd.catalog.models import BenchTrial, row_from
    from mlxd.engine.types import trial_from_dict

    system = fin.store.system_for(result["system"], session=fin.session)
    by_point: dict[tuple, list[dict[str, Any]]] = {}
    for t in result["trials"]:
        key = tuple(sorted(t["point"].items(), key=lambda kv: kv[0]))
        by_point.setdefault((t.get("variant"), key), []).append(t)
    order = {None: 0, "base": 0, "adapter": 1, "fused": 2}  # rows: base first at each point
    grouped = sorted(by_point.items(), key=lambda kv: order[kv[0][0]])
    run_ids = []
    for (variant, key), trials in grouped:
        run = _bench_run(spec, inputs, result, variant, dict(key), trials)
        run.job_id, run.system_id = fin.job.id, system.id
        rows = [row_from(BenchTrial, trial_from_dict(t), run_id=0) for t in trials]
        fin.store.add_bench_run(run, rows, session=fin.session)
        run_ids.append(run.id)
    fin.summary["bench_run_ids"] = run_ids


def _side_by_side(inputs: dict[str, Any], variant: str | None) -> dict[str, Any]:
    """What a --adapter run's row says of its variant (nothing for a plain run)."""
    if variant is None:
        return {}
    return {
        "side_by_side": {
            "variant": variant,
            "adapter": inputs["adapter_name"],
            "base": inputs["model_name"],
            "fused": inputs.get("fused_name"),
            # Memory of a variant: its weights plus what its trial added; the
            # process held every variant at once (see mlxd.engine.bench).
            "memory": "own weights + trial's rise",
        }
    }


def _bench_run(
    spec: Spec,
    inputs: dict[str, Any],
    result: dict[str, Any],
    variant: str | None,
    point: dict[str, Any],
    trials: list[dict[str, Any]],
):
    """One point's (and variant's) run row, its statistics over the trials (its job and
    system are the caller's to set)."""
    from mlxd.catalog.models import BenchRun
    from mlxd.stats import summarize

    # Side by side (--adapter): each variant's rows under its own model and adapter.
    model_of = {None: inputs["model_id"], "base": inputs["model_id"], "adapter": inputs["model_id"]}
    model_of["fused"] = inputs.get("fused_id")
    loaded = (result.get("variants") or {}).get(variant) or result
    prompt = summarize([t["prompt_tps"] for t in trials])
    gen = summarize([t["generation_tps"] for t in trials])
    ttft = summarize([t["ttft_s"] for t in trials])
    combined = summarize(
        [(t["prompt_tokens"] + t["generated_tokens"]) / t["total_s"] for t in trials]
    )
    cvs = {"prompt_tps": prompt.cv, "generation_tps": gen.cv, "ttft_s": ttft.cv}
    noisy = [k for k, cv in cvs.items() if cv == cv and cv > spec.noise_threshold]
    power = result.get("power") or {}
    return BenchRun(
        model_id=model_of[variant],
        adapter_id=inputs["adapter_id"] if variant == "adapter" else None,
        prompt_tokens=point["prompt_tokens"],
        gen_tokens=point["gen_tokens"],
        batch_size=point["batch_size"],
        depth=point["depth"],
        kv_bits=point["kv_bits"],
        prefill_step_size=point["prefill_step_size"],
        max_kv_size=point.get("max_kv_size"),
        trials=len(trials),
        warmup=spec.warmup,
        seed=spec.seed,
        load_time_s=loaded.get("load_time_s"),
        prompt_tps_mean=prompt.mean,
        prompt_tps_median=prompt.median,
        prompt_tps_std=prompt.std,
        generation_tps_mean=gen.mean,
        generation_tps_median=gen.median,
        generation_tps_std=gen.std,
        ttft_s_mean=ttft.mean,
        ttft_s_median=ttft.median,
        ttft_s_std=ttft.std,
        prompt_tps_ci95=_finite(prompt.ci95),
        generation_tps_ci95=_finite(gen.ci95),
        ttft_s_ci95=_finite(ttft.ci95),
        noisy=bool(noisy),
        combined_tps_mean=combined.mean,
        combined_tps_std=combined.std,
        combined_tps_ci95=_finite(combined.ci95),
        peak_memory_bytes=max(t["peak_memory_bytes"] for t in trials),
        active_memory_bytes=trials[-1].get("active_memory_bytes"),
        cache_memory_bytes=trials[-1].get("cache_memory_bytes"),
        peak_rss_bytes=max((t.get("peak_rss_bytes") or 0) for t in trials) or None,
        model_memory_bytes=loaded.get("model_memory_bytes"),
        system_available_before_bytes=result.get("system_available_before_bytes"),
        system_available_after_bytes=result.get("system_available_after_bytes"),
        power_source=power.get("power_source"),
        low_power_mode=power.get("low_power_mode"),
        thermal_state=power.get("thermal_state"),
        details={
            "cv": {k: _finite(v) for k, v in cvs.items()},
            "noisy_metrics": noisy,
            "noise_threshold": spec.noise_threshold,
            "delay_s": spec.delay_s,
            **_side_by_side(inputs, variant),
        },
    )


def _finite(x: float) -> float | None:
    return None if x != x else x  # NaN -> None (JSON has no NaN)
