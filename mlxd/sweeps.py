"""Quantization sweeps: one job graph that quantizes, benchmarks and scores many variants.

For every variant (bits x group size, plus each mixed recipe) a ``quantize`` job, then a
``bench`` and a ``quality`` job queued after it; plus bench and quality for the base. Work the
catalog already holds (or that is already queued) is reused instead of repeated. These are
plain functions on a Store, so a test can plan a sweep without the CLI.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from mlxd.jobs import bench, quality, quantize

PENDING = ("queued", "running")
BASE = "base"


@dataclass
class SweepRequest:
    """What the user asked for: the base model and the grid."""

    base: str  # REF
    bits: list[int] = field(default_factory=lambda: [4])
    group_sizes: list[int] = field(default_factory=lambda: [64])
    recipes: list[str] = field(default_factory=list)
    prompt_tokens: int = 512
    gen_tokens: int = 128
    trials: int = 3
    warmup: int = 1
    max_tokens: int | None = None  # of the quality text
    text: str | None = None  # quality text file; None: the one that ships with mlxd

    def params(self) -> dict[str, Any]:
        return {
            "bits": self.bits,
            "group_sizes": self.group_sizes,
            "recipes": self.recipes,
            "prompt_tokens": self.prompt_tokens,
            "gen_tokens": self.gen_tokens,
            "trials": self.trials,
            "warmup": self.warmup,
            "max_tokens": self.max_tokens,
            "text": self.text,
        }


@dataclass
class Step:
    """One job of the graph: to be submitted (``spec``) or reused (``job_id``)."""

    kind: str
    spec: Any = None
    job_id: int | None = None
    reused: bool = False


@dataclass
class VariantPlan:
    variant: str  # "4bit-g64", "mixed_3_6-g64", or "base"
    model: str  # the model's name (it may not exist yet)
    model_id: int | None
    quantize: Step | None  # None for the base
    bench: Step
    quality: Step

    @property
    def reused(self) -> list[str]:
        return [s.kind for s in (self.quantize, self.bench, self.quality) if s and s.reused]


@dataclass
class SweepPlan:
    base_id: int
    base_name: str
    request: SweepRequest
    variants: list[VariantPlan]


def quantize_specs(req: SweepRequest, base_name: str, base_id: int) -> list[quantize.Spec]:
    """The grid's quantize specs (validated): bits x group sizes, then each recipe."""
    specs = [
        quantize.Spec(model=base_name, model_id=base_id, bits=b, group_size=g)
        for b in req.bits
        for g in req.group_sizes
    ]
    # A recipe sets bits per layer; it takes one group size: 64 when asked for, else the first.
    group = 64 if 64 in req.group_sizes else req.group_sizes[0]
    specs += [
        quantize.Spec(model=base_name, model_id=base_id, recipe=r, group_size=group)
        for r in req.recipes
    ]
    return specs


def plan_sweep(store, req: SweepRequest) -> SweepPlan:
    """Decide every job of the sweep, reusing models, runs and jobs the catalog already has."""
    base = store.resolve_model(req.base)
    if base.quant_bits is not None or base.quant_mode is not None or base.quant_recipe:
        from mlxd.jobs.base import SpecError

        raise SpecError(f"model '{base.name}' is already quantized; sweep its unquantized base")
    bench_kw = {
        "prompt_tokens": [req.prompt_tokens],
        "gen_tokens": [req.gen_tokens],
        "trials": req.trials,
        "warmup": req.warmup,
    }
    # Validate everything before anything is queued.
    bench.Spec(model=base.name, **bench_kw)
    quality.Spec(model=base.name, text=req.text, max_tokens=req.max_tokens)
    plans = [
        VariantPlan(
            variant=BASE,
            model=base.name,
            model_id=base.id,
            quantize=None,
            bench=_bench_step(store, base.name, base.id, None, bench_kw),
            quality=_quality_step(store, base.name, base.id, None, None, req),
        )
    ]
    taken: set[str] = set()
    for qspec in quantize_specs(req, base.name, base.id):
        model = find_variant(store, base.id, qspec)
        after = None
        if model is not None:
            name, model_id = model.name, model.id
            qstep = Step("quantize", job_id=model.created_by_job_id, reused=True)
        else:
            pending = find_pending_quantize(store, base.id, qspec)
            if pending is not None:
                name, model_id = pending.params["name"], None
                qstep = Step("quantize", job_id=pending.id, reused=True)
            else:
                qspec.name = _free_name(store, qspec.name, taken)
                name, model_id = qspec.name, None
                qstep = Step("quantize", spec=qspec)
            after = qstep.job_id
        taken.add(name)
        plans.append(
            VariantPlan(
                variant=qspec.variant,
                model=name,
                model_id=model_id,
                quantize=qstep,
                bench=_bench_step(store, name, model_id, after, bench_kw),
                quality=_quality_step(store, name, model_id, base.name, base.id, req),
            )
        )
    return SweepPlan(base_id=base.id, base_name=base.name, request=req, variants=plans)


def submit_sweep(store, plan: SweepPlan, submit: Callable[[str, Any, int | None], int]):
    """Queue the plan's new jobs with ``submit(kind, spec, after_job_id) -> job id`` and
    record the graph as a Sweep row."""
    from mlxd.catalog.models import Sweep

    variants = []
    for v in plan.variants:
        q = v.quantize
        if q is not None and q.spec is not None:
            q.job_id = submit("quantize", q.spec, None)
        # A variant being made (by us or an earlier sweep) gates its bench and quality.
        after = q.job_id if q is not None and v.model_id is None else None
        for step in (v.bench, v.quality):
            if step.spec is not None:
                step.job_id = submit(step.kind, step.spec, after)
        variants.append(
            {
                "variant": v.variant,
                "model": v.model,
                "model_id": v.model_id,
                "quantize_job": q.job_id if q else None,
                "bench_job": v.bench.job_id,
                "quality_job": v.quality.job_id,
                "reused": v.reused,
            }
        )
    with store.write() as s:
        sweep = Sweep(base_model_id=plan.base_id, params=plan.request.params(), variants=variants)
        s.add(sweep)
        s.flush()
        return sweep


# -- what the catalog already has ------------------------------------------------------------


def find_variant(store, base_id: int, spec: quantize.Spec):
    """A model quantized from ``base_id`` with exactly this recipe, or None."""
    from sqlmodel import select

    from mlxd.catalog.models import Model

    with store.read() as s:
        q = select(Model).where(
            Model.parent_id == base_id,
            Model.quant_mode == spec.mode,
            Model.quant_group_size == spec.group_size,
        )
        q = q.where(Model.quant_recipe == spec.recipe) if spec.recipe else q.where(
            Model.quant_recipe.is_(None), Model.quant_bits == spec.bits
        )  # fmt: skip
        for model in s.exec(q.order_by(Model.id)):
            recipe = (model.details or {}).get("recipe", {}).get("quantize", {})
            if recipe.get("dtype") == spec.dtype:
                return model
    return None


def find_pending_quantize(store, base_id: int, spec: quantize.Spec):
    """A queued or running quantize job that will make this variant, or None."""
    want = {k: getattr(spec, k) for k in ("bits", "group_size", "mode", "recipe", "dtype")}
    for job in store.list_jobs(PENDING, kind="quantize"):
        p = job.params
        if p.get("model_id") == base_id and all(p.get(k) == v for k, v in want.items()):
            return job
    return None


def _free_name(store, name: str, taken: set[str]) -> str:
    """``name``, or ``name-2``, ``-3``... when a model or a queued job already has it."""
    pending = {j.params.get("name") for j in store.list_jobs(PENDING, kind="quantize")}
    candidate, n = name, 1
    while candidate in taken or candidate in pending or store.find_model(candidate) is not None:
        n += 1
        candidate = f"{name}-{n}"
    return candidate


def _same_model(params: dict[str, Any], name: str, model_id: int | None) -> bool:
    return (model_id is not None and params.get("model_id") == model_id) or params.get(
        "model"
    ) == name


def _bench_step(store, name: str, model_id: int | None, after: int | None, kw) -> Step:
    spec = bench.Spec(model=name, model_id=model_id, **kw)
    if model_id is not None:
        job_id = _finished_bench_job(store, model_id, spec)
        if job_id is not None:
            return Step("bench", job_id=job_id, reused=True)
    for job in store.list_jobs(PENDING, kind="bench"):
        p = job.params
        if _same_model(p, name, model_id) and all(
            p.get(k) == v for k, v in spec.to_params().items() if k not in ("model", "model_id")
        ):
            return Step("bench", job_id=job.id, reused=True)
    return Step("bench", spec=spec)


def _finished_bench_job(store, model_id: int, spec: bench.Spec) -> int | None:
    """The newest bench job that measured this model at the sweep's point and protocol."""
    from sqlmodel import select

    from mlxd.catalog.models import BenchRun

    with store.read() as s:
        q = (
            select(BenchRun.job_id)
            .where(
                BenchRun.model_id == model_id,
                BenchRun.prompt_tokens == spec.prompt_tokens[0],
                BenchRun.gen_tokens == spec.gen_tokens[0],
                BenchRun.batch_size == 1,
                BenchRun.depth == 0,
                BenchRun.kv_bits.is_(None),
                BenchRun.prefill_step_size == spec.prefill_step_size[0],
                BenchRun.seed == spec.seed,
                BenchRun.trials == spec.trials,
                BenchRun.warmup == spec.warmup,
                BenchRun.job_id.is_not(None),
            )
            .order_by(BenchRun.id.desc())
        )
        return s.exec(q).first()


def _quality_step(
    store, name: str, model_id: int | None, base: str | None, base_id: int | None, req
) -> Step:
    # The base is scored alone (perplexity; KL against itself would say nothing); a variant
    # is compared with the sweep's base, named explicitly rather than found through lineage.
    spec = quality.Spec(model=name, model_id=model_id, base=base, base_id=base_id,
                        text=req.text, max_tokens=req.max_tokens)  # fmt: skip
    if model_id is not None:
        job_id = _finished_quality_job(store, model_id, base_id, spec)
        if job_id is not None:
            return Step("quality", job_id=job_id, reused=True)
    for job in store.list_jobs(PENDING, kind="quality"):
        p = job.params
        if (
            _same_model(p, name, model_id)
            and p.get("base") == base
            and p.get("text") == spec.text
            and p.get("max_tokens") == spec.max_tokens
        ):
            return Step("quality", job_id=job.id, reused=True)
    return Step("quality", spec=spec)


def _text_sha256(path: str | None) -> str:
    """The sha256 quality jobs record for their text (the packaged default when None)."""
    import hashlib
    from pathlib import Path

    if path is None:
        from mlxd.engine.quality import default_text

        text = default_text()[1]
    else:
        text = Path(path).read_text(encoding="utf-8-sig")
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _finished_quality_job(store, model_id: int, base_id: int | None, spec) -> int | None:
    from sqlmodel import select

    from mlxd.catalog.models import QualityRun

    # The same text means the same bytes, not only the same path (the file may have changed).
    text_sha256 = _text_sha256(spec.text)
    with store.read() as s:
        q = select(QualityRun).where(QualityRun.model_id == model_id,
                                     QualityRun.job_id.is_not(None),
                                     QualityRun.text_sha256 == text_sha256)  # fmt: skip
        if base_id is not None:
            q = q.where(QualityRun.base_model_id == base_id)
        for run in s.exec(q.order_by(QualityRun.id.desc())):
            d = run.details or {}
            if d.get("text_path") == spec.text and d.get("max_tokens") == spec.max_tokens:
                if base_id is not None or d.get("base_from") != "given":
                    return run.job_id
    return None


# -- the table -----------------------------------------------------------------------------------


@dataclass
class SweepRow:
    """One line of the sweep table; a metric is a number, or the state of its unfinished job."""

    variant: str
    model: str
    precision: str
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


DTYPE_BITS = {"float32": 32.0, "float16": 16.0, "bfloat16": 16.0}
# A sweep benchmarks with bench.Spec's default prefill step size.
SWEEP_PREFILL_STEP_SIZE = bench.Spec(model="-").prefill_step_size[0]


def get_sweep(store, sweep_id: int):
    from mlxd.catalog.models import Sweep
    from mlxd.catalog.store import NotFound

    with store.read() as s:
        sweep = s.get(Sweep, sweep_id)
    if sweep is None:
        raise NotFound(f"sweep {sweep_id} not found; see 'mlxd sweep list'")
    return sweep


def list_sweeps(store) -> list:
    from sqlmodel import select

    from mlxd.catalog.models import Sweep

    with store.read() as s:
        return list(s.exec(select(Sweep).order_by(Sweep.id)))


def sweep_jobs(sweep) -> list[int]:
    """Every job of the sweep's graph, in submission order."""
    ids = []
    for v in sweep.variants:
        ids += [v.get(k) for k in ("quantize_job", "bench_job", "quality_job")]
    return sorted({i for i in ids if i is not None})


def sweep_rows(store, sweep) -> list[SweepRow]:
    """The sweep as a table: the base first, then each variant."""
    from sqlmodel import select

    from mlxd.catalog.models import BenchRun, Job, QualityRun

    p = sweep.params
    rows = []
    with store.read() as s:
        for v in sweep.variants:
            jobs = {k: s.get(Job, v[k]) if v.get(k) else None
                    for k in ("quantize_job", "bench_job", "quality_job")}  # fmt: skip
            model = _variant_model(s, v, jobs["quantize_job"])
            bench_run = quality_run = None
            if jobs["bench_job"] is not None and jobs["bench_job"].status == "succeeded":
                # A reused bench job may have measured other points too: take the sweep's.
                bench_run = s.exec(
                    select(BenchRun).where(
                        BenchRun.job_id == jobs["bench_job"].id,
                        BenchRun.prompt_tokens == p.get("prompt_tokens"),
                        BenchRun.gen_tokens == p.get("gen_tokens"),
                        BenchRun.batch_size == 1,
                        BenchRun.depth == 0,
                        BenchRun.kv_bits.is_(None),
                        BenchRun.prefill_step_size == SWEEP_PREFILL_STEP_SIZE,
                    )
                ).first()
            if jobs["quality_job"] is not None and jobs["quality_job"].status == "succeeded":
                quality_run = s.exec(
                    select(QualityRun).where(QualityRun.job_id == jobs["quality_job"].id)
                ).first()
            is_base = v["variant"] == BASE
            bench_state = _state(jobs["bench_job"])
            quality_state = _state(jobs["quality_job"])
            if model is None:  # not made yet: its own numbers wait on the quantize job
                size = bpw = None
            else:
                size = model.size_bytes / 1e9 if model.size_bytes else None
                bpw = model.bits_per_weight or (DTYPE_BITS.get(model.dtype) if is_base else None)
            rows.append(
                SweepRow(
                    variant=v["variant"],
                    model=v["model"],
                    precision=(f"{model.dtype} (base)" if model and model.dtype else "base")
                    if is_base
                    else v["variant"],
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
                )
            )
    return rows


def _variant_model(s, v: dict[str, Any], quantize_job):
    from sqlmodel import select

    from mlxd.catalog.models import Model

    if v.get("model_id") is not None:
        m = s.get(Model, v["model_id"])
        if m is not None:
            return m
    if quantize_job is not None and quantize_job.output_model_id is not None:
        return s.get(Model, quantize_job.output_model_id)
    if quantize_job is None or quantize_job.status == "succeeded":
        return s.exec(select(Model).where(Model.name == v["model"])).first()
    return None


def _state(job) -> str | None:
    """What an unfinished (or failed) job's cell shows."""
    if job is None:
        return None
    if job.status == "running":
        return f"running {job.progress * 100:.0f}%"
    if job.status == "succeeded":
        return "no result"
    return job.status
