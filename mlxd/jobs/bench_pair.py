"""bench_pair (`mlxd bench REF --draft-model D` or `--prompt-cache C`): two sides in one job.

With a draft model: speculative decoding against the same model alone; the run records the
acceptance rate and the speed-up. With a prompt cache: time to first token for a P-token
suffix after the cached prefix, from the cache and cold (the whole text prefilled).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Any

from mlxd.jobs.base import (
    FinishContext,
    JobFailed,
    ModelRefSpec,
    RunContext,
    add_model_input,
    check_same_tokenizer,
    resolve_input_model,
)
from mlxd.vocab.errors import SpecError

PRODUCES_MODEL = False
QUIET = True  # measures speed: nothing else may use the CPU meanwhile
TIME_LIMIT_S = 6 * 3600  # the default of --timeout


@dataclass
class Spec(ModelRefSpec):
    prompt_tokens: list[int] = field(default_factory=lambda: [512])
    gen_tokens: list[int] = field(default_factory=lambda: [128])
    trials: int = 3
    warmup: int = 1
    seed: int = 0
    draft_model: str | None = None
    draft_model_id: int | None = None
    num_draft_tokens: int = 2
    prompt_cache: str | None = None

    def __post_init__(self):
        if (self.draft_model is None) == (self.prompt_cache is None):
            raise SpecError("a paired bench needs exactly one of --draft-model or --prompt-cache")
        if any(int(p) < 1 for p in self.prompt_tokens) or any(int(g) < 2 for g in self.gen_tokens):
            raise SpecError("-p must be at least 1 and -g at least 2 tokens")
        if self.trials < 1 or self.warmup < 0:
            raise SpecError("--trials must be at least 1 and --warmup zero or more")
        if not 1 <= self.num_draft_tokens <= 16:
            raise SpecError("--num-draft-tokens must be from 1 to 16")

    def points(self) -> list[tuple[int, int]]:
        return list(itertools.product(self.prompt_tokens, self.gen_tokens))


DRAFT_TOKENIZER_WHY = (
    "a draft model must share the model's tokenizer (e.g. a smaller model of its family)"
)


def check_draft_tokenizer(model, draft) -> None:
    """Speculative decoding checks the draft's tokens by id: both need one tokenizer
    (SpecError naming both models and both tokenizers)."""
    check_same_tokenizer(model, draft, DRAFT_TOKENIZER_WHY)


def describe(spec: Spec) -> str:
    p = ",".join(map(str, spec.prompt_tokens))
    g = ",".join(map(str, spec.gen_tokens))
    side = (
        f"--draft-model {spec.draft_model}"
        if spec.draft_model
        else f"--prompt-cache {spec.prompt_cache}"
    )
    return f"bench {spec.model} {side} -p {p} -g {g} -n {spec.trials}"


def prepare(spec: Spec, store, job=None) -> dict[str, Any]:

    from mlxd.catalog.store import NotFound
    from mlxd.jobs.cache_prompt import cache_inputs

    inputs = resolve_input_model(spec, store)
    if spec.draft_model is not None:
        try:
            draft = store.resolve_model(spec.draft_model_id or spec.draft_model)
        except NotFound as e:
            raise JobFailed(str(e.args[0])) from None
        try:
            check_draft_tokenizer(store.resolve_model(inputs["model_id"]), draft)
        except SpecError as e:
            raise JobFailed(str(e)) from None
        inputs["draft_model_id"] = draft.id
        add_model_input(inputs, store, draft, "draft_model_path")
    inputs.update(cache_inputs(store, spec.prompt_cache, inputs["model_id"]))
    return inputs


def run(spec: Spec, inputs: dict[str, Any], ctx: RunContext) -> dict[str, Any]:
    import dataclasses
    from pathlib import Path

    from mlxd.engine.backend import system_facts
    from mlxd.engine.bench_pair import bench_pair
    from mlxd.formats.modelfolder import tokenizer_fingerprint

    if inputs.get("draft_model_path"):  # both folders are here now (fetched if need be)
        a, b = (tokenizer_fingerprint(Path(inputs[k])) for k in ("model_path", "draft_model_path"))
        if a and b and a != b:
            raise JobFailed(
                f"'{spec.model}' and '{spec.draft_model}' have different tokenizers; "
                + DRAFT_TOKENIZER_WHY
            )
    result = bench_pair(
        Path(inputs["model_path"]),
        spec.points(),
        draft_path=Path(inputs["draft_model_path"]) if inputs.get("draft_model_path") else None,
        num_draft_tokens=spec.num_draft_tokens,
        prompt_cache_path=Path(inputs["prompt_cache_path"])
        if inputs.get("prompt_cache_path")
        else None,
        trials=spec.trials,
        warmup=spec.warmup,
        seed=spec.seed,
        on_progress=ctx.progress,
    )
    out = dataclasses.asdict(result)
    out["system"] = system_facts()
    return out


def finish(spec: Spec, inputs: dict[str, Any], result: dict[str, Any], fin: FinishContext) -> None:
    from mlxd.catalog.models import BenchRun, BenchTrial
    from mlxd.vocab.stats import summarize

    def mean(xs: list[float]) -> float | None:
        return sum(xs) / len(xs) if xs else None

    system = fin.store.system_for(result["system"], session=fin.session)
    run_ids = []
    for key, trials in result["trials"].items():
        p, g = (int(x) for x in key.split(","))
        gen = summarize([t["other_generation_tps"] for t in trials])
        prompt = summarize([t["other_prompt_tps"] for t in trials])
        plain_gen = mean([t["plain_generation_tps"] for t in trials])
        cold_ttft = summarize([t["plain_ttft_s"] for t in trials])
        other_ttft = summarize([t["other_ttft_s"] for t in trials])
        drafted = spec.draft_model is not None
        accepted = sum(t["accepted_tokens"] or 0 for t in trials)
        proposed = sum(t["proposed_tokens"] or 0 for t in trials)
        run = BenchRun(
            job_id=fin.job.id,
            model_id=inputs["model_id"],
            system_id=system.id,
            prompt_tokens=p,
            gen_tokens=g,
            trials=len(trials),
            warmup=spec.warmup,
            seed=spec.seed,
            load_time_s=result["load_time_s"],
            model_memory_bytes=result["model_memory_bytes"],
            prompt_tps_mean=prompt.mean,
            prompt_tps_median=prompt.median,
            generation_tps_mean=gen.mean,
            generation_tps_median=gen.median,
            generation_tps_std=gen.std if gen.std == gen.std else None,
            # With a cache, the run's TTFT is the cold one (the whole text) and the cached
            # one has its own column; with a draft, both are the drafted run's.
            ttft_s_mean=other_ttft.mean if drafted else cold_ttft.mean,
            ttft_s_median=other_ttft.median if drafted else cold_ttft.median,
            peak_memory_bytes=max(t["peak_memory_bytes"] for t in trials),
            draft_model_id=inputs.get("draft_model_id"),
            num_draft_tokens=spec.num_draft_tokens if drafted else None,
            acceptance_rate=accepted / proposed if drafted and proposed else None,
            draft_speedup=gen.mean / plain_gen if drafted and plain_gen else None,
            prompt_cache_id=inputs.get("prompt_cache_id"),
            cached_tokens=result.get("cached_tokens"),
            ttft_cached_s_mean=None if drafted else other_ttft.mean,
            details={
                "plain_generation_tps_mean": plain_gen,
                "plain_ttft_s_mean": cold_ttft.mean,
                "paired": "draft" if drafted else "prompt_cache",
            },
        )
        rows = [
            BenchTrial(
                run_id=0,
                trial_index=i,
                prompt_tokens=t["other_prompt_tokens"],
                generated_tokens=t["generated_tokens"],
                prompt_tps=t["other_prompt_tps"],
                generation_tps=t["other_generation_tps"],
                ttft_s=t["other_ttft_s"],
                total_s=t["other_total_s"],
                peak_memory_bytes=t["peak_memory_bytes"],
            )
            for i, t in enumerate(trials)
        ]
        fin.store.add_bench_run(run, rows, session=fin.session)
        run_ids.append(run.id)
    fin.summary["bench_run_ids"] = run_ids
