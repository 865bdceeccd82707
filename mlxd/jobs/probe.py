"""probe: measure this machine's memory bandwidth once and keep it in the catalog.

Benchmarks divide by it to show generation throughput as a share of the bandwidth roofline.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from mlxd.jobs.base import FinishContext, JobSpec, RunContext
from mlxd.vocab.errors import SpecError

PRODUCES_MODEL = False
QUIET = True  # measures speed: nothing else may use the CPU meanwhile
TIME_LIMIT_S = 3600  # the default of --timeout
MAX_SIZE_MB = 64 * 1024


@dataclass
class Spec(JobSpec):
    size_mb: int | None = None  # None: chosen from the machine's RAM (256 MiB to 1 GiB)
    repeats: int = 10

    def __post_init__(self):
        if self.size_mb is not None and not 1 <= self.size_mb <= MAX_SIZE_MB:
            raise SpecError(f"--size-mb must be between 1 and {MAX_SIZE_MB}")
        if self.repeats < 1:
            raise SpecError("--repeats must be at least 1")


def describe(spec: Spec) -> str:
    size = f"{spec.size_mb} MiB" if spec.size_mb else "auto size"
    return f"probe memory bandwidth ({size}, best of {spec.repeats})"


def prepare(spec: Spec, store, job=None) -> dict[str, Any]:
    return {}


def run(spec: Spec, inputs: dict[str, Any], ctx: RunContext) -> dict[str, Any]:
    from mlxd.engine.backend import system_facts
    from mlxd.engine.probe import MIB, default_size_bytes, measure_bandwidth

    facts = system_facts()
    size = spec.size_mb * MIB if spec.size_mb else default_size_bytes(facts.get("ram_bytes"))
    measured = measure_bandwidth(
        size,
        spec.repeats,
        progress=lambda i, n, what: ctx.progress(i / (n + 1), f"step {i}/{n}: {what}"),
    )
    ctx.progress(1.0, "done")
    return {"bandwidth": measured, "system": facts}


def finish(spec: Spec, inputs: dict[str, Any], result: dict[str, Any], fin: FinishContext) -> None:
    from mlxd.catalog.models import Probe

    m, facts = result["bandwidth"], result["system"]
    probe = Probe(
        host=facts["host"],
        cpu=facts["cpu"],
        backend=facts["backend"],
        ram_bytes=facts.get("ram_bytes"),
        memory_bandwidth_bytes_per_s=m["memory_bandwidth_bytes_per_s"],
        method=f"mlx sum and x+1 on {m['size_bytes'] // (1 << 20)} MiB float32, "
        f"best of {m['repeats']} after {m['warmup']} warm-up",
        details={**m, "chip": facts.get("chip"), "mlx_version": facts.get("mlx_version")},
    )
    fin.session.add(probe)
    fin.session.flush()
    fin.summary["probe_id"] = probe.id
    fin.summary["memory_bandwidth_gb_per_s"] = round(m["memory_bandwidth_bytes_per_s"] / 1e9, 2)
