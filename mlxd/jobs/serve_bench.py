"""serve_bench (`mlxd bench REF --serve`): how many people can share this model on this machine?

The job's child starts mlx_lm.server (OpenAI-compatible) on a free loopback port and drives
it with N streaming chat-completion clients at each concurrency. Each concurrency becomes
one bench run in mode "serve" with per-request time to first token and inter-token latency
percentiles; each request is a trial row. The server is a process that dies with the
job's child, whatever ends it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from mlxd.jobs.base import FinishContext, ModelRefSpec, RunContext, resolve_input_model
from mlxd.vocab.errors import SpecError

PRODUCES_MODEL = False
QUIET = True  # measures speed: nothing else may use the CPU meanwhile
TIME_LIMIT_S = 6 * 3600  # the default of --timeout


@dataclass
class Spec(ModelRefSpec):
    concurrency: list[int] = field(default_factory=lambda: [1, 4])
    requests: int = 16  # per concurrency
    prompt_tokens: int = 128
    gen_tokens: int = 64
    warmup: int = 1  # requests before measuring (the first is several times slower)
    seed: int = 0

    def __post_init__(self):
        if not self.concurrency or any(int(c) < 1 for c in self.concurrency):
            raise SpecError("--concurrency must be positive whole numbers, e.g. 1,4,16")
        if self.requests < 1:
            raise SpecError("--requests must be at least 1")
        if self.prompt_tokens < 1 or self.gen_tokens < 2:
            raise SpecError("--serve needs -p of at least 1 and -g of at least 2 tokens")
        if self.warmup < 0:
            raise SpecError("--warmup must be zero or more")


def describe(spec: Spec) -> str:
    c = ",".join(map(str, spec.concurrency))
    return (
        f"bench {spec.model} --serve --concurrency {c} --requests {spec.requests} "
        f"-p {spec.prompt_tokens} -g {spec.gen_tokens}"
    )


def prepare(spec: Spec, store, job=None) -> dict[str, Any]:
    return resolve_input_model(spec, store)


def run(spec: Spec, inputs: dict[str, Any], ctx: RunContext) -> dict[str, Any]:
    import dataclasses
    import sys
    from pathlib import Path

    import psutil

    from mlxd.engine.backend import system_facts
    from mlxd.engine.serving import (
        Server,
        load_tokenizer,
        prompts_of_length,
        run_level,
        stream_chat,
    )
    from mlxd.system import sysinfo

    path = Path(inputs["model_path"])
    tokenizer = load_tokenizer(path)
    levels = []
    total = len(spec.concurrency) * spec.requests
    with Server(path) as server:
        # For the log (and tests): which process to look for, and where.
        print(
            f"mlx_lm.server pid {server.pid} on 127.0.0.1:{server.port}",
            file=sys.stderr,
            flush=True,
        )
        ctx.progress(0.0, f"starting mlx_lm.server (pid {server.pid}) for {inputs['model_name']}")
        server.wait_ready()
        for i in range(spec.warmup):
            stream_chat(server.port, f"Warm up {i}", 4)
        peak_rss = 0
        done_before = 0
        for level_index, c in enumerate(spec.concurrency):
            prompts = prompts_of_length(
                tokenizer, spec.requests, spec.prompt_tokens, seed=spec.seed + level_index
            )

            def progress(done: int, c=c, base=done_before) -> None:
                ctx.progress(
                    (base + done) / total, f"concurrency {c}: {done}/{spec.requests} requests"
                )

            level = run_level(
                server.port, prompts, concurrency=c, max_tokens=spec.gen_tokens, on_request=progress
            )
            done_before += spec.requests
            try:
                peak_rss = max(peak_rss, psutil.Process(server.pid).memory_info().rss)
            except psutil.Error:
                pass
            levels.append(dataclasses.asdict(level))
    power_state = getattr(sysinfo, "power_state", None)
    return {
        "levels": levels,
        "server_peak_rss_bytes": peak_rss or None,
        "system": system_facts(),
        "power": power_state() if power_state else {},
    }


def finish(spec: Spec, inputs: dict[str, Any], result: dict[str, Any], fin: FinishContext) -> None:
    from mlxd.catalog.models import BenchRun, BenchTrial
    from mlxd.engine.serving import percentile
    from mlxd.vocab.stats import summarize

    system = fin.store.system_for(result["system"], session=fin.session)
    power = result.get("power") or {}
    run_ids = []
    for level in result["levels"]:
        ok = [r for r in level["requests"] if r["error"] is None]
        ttfts = [r["ttft_s"] for r in ok if r["ttft_s"] is not None]
        itls = [g for r in ok for g in r["itl_s"]]
        req_tps = [r["tokens_per_s"] for r in ok if r["tokens_per_s"]]
        out_tokens = sum(r["output_tokens"] for r in ok)
        ttft = summarize(ttfts) if ttfts else None
        prompt_tps = [r["prompt_tokens"] / r["ttft_s"] for r in ok if r["ttft_s"]]
        run = BenchRun(
            job_id=fin.job.id,
            model_id=inputs["model_id"],
            system_id=system.id,
            mode="serve",
            concurrency=level["concurrency"],
            requests=len(level["requests"]),
            errors=len(level["requests"]) - len(ok),
            prompt_tokens=spec.prompt_tokens,
            gen_tokens=spec.gen_tokens,
            batch_size=1,
            trials=len(ok),
            warmup=spec.warmup,
            seed=spec.seed,
            # Aggregate: every client's output tokens over the level's wall time.
            generation_tps_mean=out_tokens / level["wall_s"] if level["wall_s"] > 0 else None,
            prompt_tps_mean=sum(prompt_tps) / len(prompt_tps) if prompt_tps else None,
            request_tps_mean=sum(req_tps) / len(req_tps) if req_tps else None,
            ttft_s_mean=ttft.mean if ttft else None,
            ttft_s_median=ttft.median if ttft else None,
            ttft_s_std=ttft.std if ttft and ttft.std == ttft.std else None,
            ttft_p50_s=percentile(ttfts, 50),
            ttft_p95_s=percentile(ttfts, 95),
            ttft_p99_s=percentile(ttfts, 99),
            itl_p50_s=percentile(itls, 50),
            itl_p95_s=percentile(itls, 95),
            itl_p99_s=percentile(itls, 99),
            peak_rss_bytes=result.get("server_peak_rss_bytes"),
            power_source=power.get("power_source"),
            low_power_mode=power.get("low_power_mode"),
            thermal_state=power.get("thermal_state"),
            details={
                "wall_s": level["wall_s"],
                "output_tokens": out_tokens,
                "errors": sorted({r["error"] for r in level["requests"] if r["error"]})[:5],
                "server": "mlx_lm.server",
            },
        )
        trials = [
            BenchTrial(
                run_id=0,
                trial_index=i,
                prompt_tokens=r["prompt_tokens"],
                generated_tokens=r["output_tokens"],
                prompt_tps=r["prompt_tokens"] / r["ttft_s"] if r["ttft_s"] else 0.0,
                generation_tps=r["tokens_per_s"] or 0.0,
                ttft_s=r["ttft_s"] or 0.0,
                total_s=r["total_s"],
                peak_memory_bytes=0,  # the server's, not measured per request
            )
            for i, r in enumerate(ok)
        ]
        fin.store.add_bench_run(run, trials, session=fin.session)
        run_ids.append(run.id)
    fin.summary["bench_run_ids"] = run_ids
