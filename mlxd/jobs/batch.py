"""batch: many prompts from a JSONL file through batched generation, one output line each.

Each input line is a JSON string (a prompt), a list of {role, content} messages, or an
object with "prompt" or "messages" and an optional "max_tokens". The run's aggregate
throughput is recorded as a bench run (mode "batch"), so `mlxd results` compares it with
benchmarks and with other batch sizes.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mlxd.jobs.base import FinishContext, JobFailed, ModelRefSpec, RunContext, resolve_input_model
from mlxd.vocab.errors import SpecError
from mlxd.vocab.sampling import sampling_from_dict

PRODUCES_MODEL = False
QUIET = True  # measures speed: nothing else may use the CPU meanwhile
TIME_LIMIT_S = 12 * 3600  # the default of --timeout
ROLES = ("system", "user", "assistant")


@dataclass
class BatchPrompt:
    """One input line: a text or a messages list, and its own max_tokens (or None)."""

    prompt: str | list[dict[str, str]]
    max_tokens: int | None = None
    line: int = 0  # in the file, for messages


def read_prompts(path: Path) -> list[BatchPrompt]:
    """The prompts of a JSONL file, or SpecError naming the first bad line."""
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise SpecError(f"cannot read prompts from {path}: {e}") from None
    out = []
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            prompt = _parse_line(json.loads(line))
        except (json.JSONDecodeError, ValueError) as e:
            raise SpecError(f"{Path(path).name} line {n}: {e}") from None
        prompt.line = n
        out.append(prompt)
    if not out:
        raise SpecError(f"{path} holds no prompts")
    return out


def check_context(prompts: list[BatchPrompt], model_path: Path, model_name: str, file: str):
    """Refuse a prompt longer than the model's context (counted with its tokenizer.json),
    naming the line: generation past it only grows memory. Unchecked without a stated
    context or a tokenizer.json."""
    from mlxd.formats.modelfolder import context_length, read_config

    limit = context_length(read_config(model_path))
    tokenizer_json = Path(model_path) / "tokenizer.json"
    if limit is None or not tokenizer_json.is_file():
        return
    try:
        from tokenizers import Tokenizer

        tok = Tokenizer.from_file(str(tokenizer_json))
    except Exception:  # noqa: BLE001  an unreadable tokenizer fails the job later, plainly
        return
    texts = [
        p.prompt if isinstance(p.prompt, str) else "\n".join(m["content"] for m in p.prompt)
        for p in prompts
    ]
    for p, enc in zip(prompts, tok.encode_batch(texts, add_special_tokens=False), strict=True):
        if len(enc.ids) > limit:
            raise SpecError(
                f"{Path(file).name} line {p.line}: the prompt is {len(enc.ids):,} tokens; "
                f"model '{model_name}' has a context of {limit:,}"
            )


def _parse_line(data: Any) -> BatchPrompt:
    max_tokens = None
    if isinstance(data, dict):
        max_tokens = data.get("max_tokens")
        if max_tokens is not None and (not isinstance(max_tokens, int) or max_tokens < 1):
            raise ValueError("max_tokens must be a positive whole number")
        if "prompt" in data:
            data = data["prompt"]
        elif "messages" in data:
            data = data["messages"]
        else:
            raise ValueError('an object needs "prompt" or "messages"')
    if isinstance(data, str):
        if not data.strip():
            raise ValueError("empty prompt")
        return BatchPrompt(data, max_tokens)
    if isinstance(data, list) and data:
        for m in data:
            if not (
                isinstance(m, dict) and m.get("role") in ROLES and isinstance(m.get("content"), str)
            ):
                raise ValueError(
                    "each message needs a role (system, user, assistant) and a text content"
                )
        return BatchPrompt([{"role": m["role"], "content": m["content"]} for m in data], max_tokens)
    raise ValueError("expected a prompt string, a messages list, or an object with one")


@dataclass
class Spec(ModelRefSpec):
    prompts_file: str = ""
    output_file: str = ""
    batch_size: int = 8
    max_tokens: int | None = None  # lines without their own; None: the sampling's
    sampling: dict[str, Any] = field(default_factory=dict)
    raw: bool = False
    prompt_cache: str | None = None

    def __post_init__(self):
        if not self.prompts_file or not self.output_file:
            raise SpecError("a batch needs --prompts FILE and an output file")
        if self.batch_size < 1:
            raise SpecError("--batch-size must be at least 1")
        if self.max_tokens is not None and self.max_tokens < 1:
            raise SpecError("--max-tokens must be at least 1")
        if Path(self.prompts_file).resolve() == Path(self.output_file).resolve():
            raise SpecError("the output file must not be the prompts file")
        sampling_from_dict(self.sampling)  # validates

    @property
    def default_max_tokens(self) -> int:
        return self.max_tokens or sampling_from_dict(self.sampling).max_tokens


def describe(spec: Spec) -> str:
    return f"batch {spec.model} {Path(spec.prompts_file).name} -b {spec.batch_size} -> {spec.output_file}"


def prepare(spec: Spec, store, job=None) -> dict[str, Any]:
    from mlxd.jobs.cache_prompt import cache_inputs

    inputs = resolve_input_model(spec, store)
    if not Path(spec.prompts_file).is_file():
        raise JobFailed(f"the prompts file {spec.prompts_file} is gone")
    try:  # again here: the model may have been made by an earlier job, or the file changed
        if inputs.get("model_path"):
            check_context(
                read_prompts(Path(spec.prompts_file)),
                Path(inputs["model_path"]),
                inputs["model_name"],
                spec.prompts_file,
            )
    except SpecError as e:
        raise JobFailed(str(e)) from None
    inputs.update(cache_inputs(store, spec.prompt_cache, inputs["model_id"]))
    return inputs


def run(spec: Spec, inputs: dict[str, Any], ctx: RunContext) -> dict[str, Any]:
    import dataclasses
    import os

    from mlxd.engine.backend import system_facts
    from mlxd.engine.batch import run_batch

    prompts = read_prompts(Path(spec.prompts_file))
    n = len(prompts)
    ctx.progress(0.0, f"loading {inputs['model_name']} for {n} prompts")
    result = run_batch(
        Path(inputs["model_path"]),
        [p.prompt for p in prompts],
        max_tokens=[p.max_tokens or spec.default_max_tokens for p in prompts],
        sampling=sampling_from_dict(spec.sampling),
        batch_size=spec.batch_size,
        raw=spec.raw,
        prompt_cache_path=Path(inputs["prompt_cache_path"])
        if inputs.get("prompt_cache_path")
        else None,
        on_done=lambda done, total: ctx.progress(done / total, f"{done}/{total} prompts done"),
    )
    out = Path(spec.output_file)
    partial = out.with_name(f".{out.name}.job-{ctx.job_id}.partial")
    with open(partial, "w", encoding="utf-8") as f:
        for item in result.items:
            line = {
                "index": item.index,
                "text": item.text,
                "prompt_tokens": item.prompt_tokens,
                "generated_tokens": item.generated_tokens,
                "tokens_per_s": item.tokens_per_s,
                "finish_reason": item.finish_reason,
                "token_ids": item.token_ids,
            }
            f.write(json.dumps(line, ensure_ascii=False) + "\n")
    os.replace(partial, out)
    summary = dataclasses.asdict(result)
    summary.pop("items")
    summary["item_tps"] = [i.tokens_per_s for i in result.items]
    summary["item_ttft_s"] = [i.ttft_s for i in result.items]
    summary["item_prompt_tokens"] = [i.prompt_tokens for i in result.items]
    summary["system"] = system_facts()
    return summary


def finish(spec: Spec, inputs: dict[str, Any], result: dict[str, Any], fin: FinishContext) -> None:
    from mlxd.catalog.models import BenchRun, BenchTrial

    system = fin.store.system_for(result["system"], session=fin.session)
    n = len(result["item_prompt_tokens"])
    item_tps = [t for t in result["item_tps"] if t is not None]
    ttfts = [t for t in result["item_ttft_s"] if t is not None]
    ttft_mean = sum(ttfts) / len(ttfts) if ttfts else None
    run = BenchRun(
        job_id=fin.job.id,
        model_id=inputs["model_id"],
        system_id=system.id,
        mode="batch",
        prompt_tokens=round(sum(result["item_prompt_tokens"]) / n),
        gen_tokens=spec.default_max_tokens,
        batch_size=spec.batch_size,
        trials=1,
        warmup=1,
        load_time_s=result["load_time_s"],
        prompt_tps_mean=result["prompt_tps"],
        prompt_tps_median=result["prompt_tps"],
        generation_tps_mean=result["generation_tps"],
        generation_tps_median=result["generation_tps"],
        ttft_s_mean=ttft_mean,
        ttft_s_median=ttft_mean,
        peak_memory_bytes=result["peak_memory_bytes"],
        model_memory_bytes=result["model_memory_bytes"],
        requests=n,
        request_tps_mean=sum(item_tps) / len(item_tps) if item_tps else None,
        prompt_cache_id=inputs.get("prompt_cache_id"),
        cached_tokens=result.get("cached_tokens"),
        details={
            "prompts_file": spec.prompts_file,
            "output_file": spec.output_file,
            "wall_s": result["wall_s"],
            "prompt_tokens_total": result["prompt_tokens"],
            "generation_tokens_total": result["generation_tokens"],
            "sampling": spec.sampling,
        },
    )
    trial = BenchTrial(
        run_id=0,
        trial_index=0,
        prompt_tokens=result["prompt_tokens"],
        generated_tokens=result["generation_tokens"],
        prompt_tps=result["prompt_tps"],
        generation_tps=result["generation_tps"],
        ttft_s=ttft_mean or 0.0,
        total_s=result["wall_s"],
        peak_memory_bytes=result["peak_memory_bytes"],
    )
    fin.store.add_bench_run(run, [trial], session=fin.session)
    fin.summary.update(
        {
            "prompts": n,
            "output": spec.output_file,
            "generation_tps": round(result["generation_tps"], 1),
            "bench_run_ids": [run.id],
        }
    )
