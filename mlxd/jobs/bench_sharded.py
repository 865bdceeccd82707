"""bench_sharded: one model sharded over several ranks (``mlxd bench REF --ranks N``).

The ranks run under ``mlx.launch`` (mlxd.engine.sharded): tensor parallelism with mlx-lm's
``sharded_load``, over 127.0.0.1 or the machines of a hostfile. One bench run is recorded:
rank 0's tok/s (the ranks step together), the largest rank's peak memory, and in
``details`` the backend, the placement (each rank's host) and every rank's figures.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mlxd.jobs.base import FinishContext, ModelRefSpec, RunContext, resolve_input_model
from mlxd.vocab.choices import DEFAULT_PREFILL_STEP_SIZE
from mlxd.vocab.errors import SpecError

PRODUCES_MODEL = False
QUIET = True  # measures speed: nothing else may use the CPU meanwhile
TIME_LIMIT_S = 6 * 3600  # the default of --timeout
BACKENDS = ("ring", "mpi", "jaccl")
MAX_RANKS = 64


@dataclass
class Spec(ModelRefSpec):
    ranks: int = 2
    hostfile: str | None = None
    backend: str = "ring"
    prompt_tokens: int = 512
    gen_tokens: int = 128
    seed: int = 0

    def __post_init__(self):
        if not 1 <= self.ranks <= MAX_RANKS:
            raise SpecError(f"--ranks must be between 1 and {MAX_RANKS}")
        if self.backend not in BACKENDS:
            raise SpecError(f"--backend must be one of {', '.join(BACKENDS)}")
        if self.hostfile is not None:
            path = Path(self.hostfile).expanduser()
            if not path.is_file():
                raise SpecError(f"--hostfile {self.hostfile} does not exist")
            self.hostfile = str(path.resolve())
        if self.prompt_tokens < 1 or self.gen_tokens < 1:
            raise SpecError("-p and -g must be at least 1 with --ranks")


def describe(spec: Spec) -> str:
    where = f"hostfile {spec.hostfile}" if spec.hostfile else "127.0.0.1"
    return (
        f"bench {spec.model} -p {spec.prompt_tokens} -g {spec.gen_tokens} "
        f"--ranks {spec.ranks} ({spec.backend}, {where})"
    )


def prepare(spec: Spec, store, job=None) -> dict[str, Any]:
    return resolve_input_model(spec, store)


def run(spec: Spec, inputs: dict[str, Any], ctx: RunContext) -> dict[str, Any]:
    from mlxd.engine.sharded import ShardedError, bench_sharded
    from mlxd.system.sysinfo import machine_facts

    ctx.progress(0.05, f"launching {spec.ranks} rank(s) ({spec.backend})")
    try:
        result = bench_sharded(
            inputs["model_path"],
            ranks=spec.ranks,
            prompt_tokens=spec.prompt_tokens,
            gen_tokens=spec.gen_tokens,
            backend=spec.backend,
            hostfile=spec.hostfile,
            seed=spec.seed,
        )
    except ShardedError as e:
        raise RuntimeError(str(e)) from None
    ctx.progress(1.0, "done")
    return {"sharded": result.as_dict(), "system": machine_facts()}


def finish(spec: Spec, inputs: dict[str, Any], result: dict[str, Any], fin: FinishContext) -> None:
    from mlxd.catalog.models import BenchRun

    sharded = result["sharded"]
    system = fin.store.system_for(result["system"], session=fin.session)
    per_rank = sharded["per_rank"]
    run = BenchRun(
        job_id=fin.job.id,
        model_id=inputs["model_id"],
        system_id=system.id,
        prompt_tokens=spec.prompt_tokens,
        gen_tokens=spec.gen_tokens,
        batch_size=1,
        depth=0,
        kv_bits=None,
        prefill_step_size=DEFAULT_PREFILL_STEP_SIZE,
        trials=1,
        warmup=1,
        seed=spec.seed,
        load_time_s=max(r["load_time_s"] for r in per_rank),
        prompt_tps_mean=sharded["prompt_tps"],
        prompt_tps_median=sharded["prompt_tps"],
        generation_tps_mean=sharded["generation_tps"],
        generation_tps_median=sharded["generation_tps"],
        peak_memory_bytes=max(r["peak_memory_bytes"] for r in per_rank),
        details={
            "ranks": sharded["ranks"],
            "backend": sharded["backend"],
            "hostfile": spec.hostfile,
            "placement": [r["host"] for r in per_rank],
            "per_rank": per_rank,
        },
    )
    fin.store.add_bench_run(run, [], session=fin.session)
    fin.summary["bench_run_ids"] = [run.id]
