"""A sweep as a table (BENCHMARKS.md style), by bits per weight: precision, method, perplexity,
KL, accuracy, tok/s, memory, size.

Read with :class:`mlxd.catalog.read.Reader` only, so `mlxd sweep show` stays fast.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from mlxd.catalog.read import Reader, Row
from mlxd.formats.modelfolder import dtype_bits
from mlxd.vocab.choices import SWEEP_BASE, quant_method, sweep_point


@dataclass
class SweepRow:
    """One line of the sweep table; a metric is a number, or the state of its unfinished job."""

    variant: str
    model: str
    precision: str
    method: str | None  # rtn, awq, ...; None for the base
    perplexity: float | str | None
    kl_mean: float | str | None
    prompt_tps: float | str | None
    generation_tps: float | str | None
    peak_memory_gb: float | str | None
    size_gb: float | None
    bits_per_weight: float | None
    quantize_job: int | None
    bench_job: int | None
    quality_job: int | None
    accuracy: float | str | None = None  # of its eval run (sweep --eval)
    accuracy_drop: float | None = None  # the base's accuracy minus this one's
    eval_job: int | None = None
    synthetic: bool = False


def sweep_jobs(sweep: Row) -> list[int]:
    """Every job of the sweep's graph, in submission order."""
    ids = []
    for v in sweep.variants:
        ids += [v.get(k) for k in ("quantize_job", "bench_job", "quality_job", "eval_job")]
    return sorted({i for i in ids if i is not None})


def sweep_rows(reader: Reader, sweep: Row) -> list[SweepRow]:
    """The sweep as a table, by bits per weight (the base first)."""
    p = sweep.params
    point = sweep_point(p.get("prompt_tokens"), p.get("gen_tokens"))
    all_jobs = reader.jobs_by_id(sweep_jobs(sweep))
    rows: list[SweepRow] = []
    protocols: dict[int, str] = {}
    for v in sweep.variants:
        jobs = {
            k: all_jobs.get(v[k]) if v.get(k) else None
            for k in ("quantize_job", "bench_job", "quality_job", "eval_job")
        }
        model = _variant_model(reader, v, jobs["quantize_job"])
        bench_run = quality_run = None
        if jobs["bench_job"] is not None and jobs["bench_job"].status == "succeeded":
            # A reused bench job may have measured other points too: take the sweep's.
            bench_run = reader.bench_run_at(jobs["bench_job"].id, point)
        if jobs["quality_job"] is not None and jobs["quality_job"].status == "succeeded":
            quality_run = reader.quality_run_of_job(jobs["quality_job"].id)
        eval_run = None
        if jobs["eval_job"] is not None and jobs["eval_job"].status == "succeeded":
            mine = [
                r for r in reader.eval_runs_of_job(jobs["eval_job"].id) if r.model == v["model"]
            ]
            eval_run = mine[-1] if mine else None
        is_base = v["variant"] == SWEEP_BASE
        bench_state = _state(jobs["bench_job"])
        quality_state = _state(jobs["quality_job"])
        if model is None:  # not made yet: its own numbers wait on the quantize job
            size = bpw = None
        else:
            size = model.size_bytes / 1e9 if model.size_bytes else None
            dtype_bpw = dtype_bits(model.dtype) if is_base else None
            bpw = model.bits_per_weight or (float(dtype_bpw) if dtype_bpw else None)
        if is_base:
            precision = f"{model.dtype} (base)" if model and model.dtype else "base"
        else:
            precision = v["variant"]
        rows.append(
            SweepRow(
                variant=v["variant"],
                model=v["model"],
                precision=precision,
                method=None if is_base or model is None else quant_method(model),
                perplexity=quality_run.perplexity if quality_run else quality_state,
                kl_mean=(None if is_base else quality_run.kl_mean)
                if quality_run
                else quality_state,
                prompt_tps=bench_run.prompt_tps_mean if bench_run else bench_state,
                generation_tps=bench_run.generation_tps_mean if bench_run else bench_state,
                peak_memory_gb=(bench_run.peak_memory_bytes or 0) / 1e9
                if bench_run
                else bench_state,
                size_gb=size,
                bits_per_weight=bpw,
                quantize_job=v.get("quantize_job"),
                bench_job=v.get("bench_job"),
                quality_job=v.get("quality_job"),
                accuracy=eval_run.accuracy if eval_run else _state(jobs["eval_job"]),
                eval_job=v.get("eval_job"),
                synthetic=bool(model and model.synthetic),
            )
        )
        if eval_run is not None:
            protocols[len(rows) - 1] = eval_run.protocol
    # A variant's drop: against the base's run of the same items.
    base = next((i for i, r in enumerate(rows) if r.variant == SWEEP_BASE), None)
    if base is not None and isinstance(rows[base].accuracy, float):
        for i, r in enumerate(rows):
            if (
                i != base
                and isinstance(r.accuracy, float)
                and protocols.get(i) == protocols.get(base)
            ):
                r.accuracy_drop = rows[base].accuracy - r.accuracy
    rows.sort(key=lambda r: (r.variant != SWEEP_BASE, -(r.bits_per_weight or 0)))
    return rows


def _variant_model(reader: Reader, v: dict[str, Any], quantize_job: Row | None) -> Row | None:
    if v.get("model_id") is not None:
        m = reader.model_by_id(v["model_id"])
        if m is not None:
            return m
    if quantize_job is not None and quantize_job.output_model_id is not None:
        return reader.model_by_id(quantize_job.output_model_id)
    if quantize_job is None or quantize_job.status == "succeeded":
        return reader.model_named(v["model"])
    return None


def _state(job: Row | None) -> str | None:
    """What an unfinished (or failed) job's cell shows."""
    if job is None:
        return None
    if job.status == "running":
        return f"running {job.progress * 100:.0f}%"
    if job.status == "succeeded":
        return "no result"
    return job.status
