"""Quantization sweeps: one job graph that quantizes, benchmarks and scores many variants.

For every variant (bits x group size, plus each mixed recipe) a ``quantize`` job, then a
``bench`` and a ``quality`` job queued after it (and an ``eval`` job with ``--eval``); plus
the same for the base. Work the
catalog already holds (or that is already queued) is reused instead of repeated. These are
plain functions on a Store, so a test can plan a sweep without the CLI.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from mlxd.jobs import bench, quality, quantize
from mlxd.jobs import eval as eval_job
from mlxd.vocab.choices import SWEEP_BASE, is_quantized, sweep_point

PENDING = ("queued", "running")


@dataclass
class SweepRequest:
    """What the user asked for: the base model and the grid."""

    base: str  # REF
    bits: list[int] = field(default_factory=lambda: [4])
    group_sizes: list[int] = field(default_factory=lambda: [64])
    recipes: list[str] = field(default_factory=list)
    modes: list[str] = field(default_factory=list)  # microscaling: mxfp4, nvfp4, mxfp8
    dtype: str | None = None  # of scales and unquantized layers; None: the backend's default
    prompt_tokens: int = 512
    gen_tokens: int = 128
    trials: int = 3
    warmup: int = 1
    max_tokens: int | None = None  # of the quality text
    text: str | None = None  # quality text file; None: the one that ships with mlxd
    eval_tasks: list[str] = field(default_factory=list)  # --eval: none means no eval jobs
    eval_limit: int | None = None  # items per task

    def params(self) -> dict[str, Any]:
        return {
            "bits": self.bits,
            "group_sizes": self.group_sizes,
            "recipes": self.recipes,
            "modes": self.modes,
            "dtype": self.dtype,
            "prompt_tokens": self.prompt_tokens,
            "gen_tokens": self.gen_tokens,
            "trials": self.trials,
            "warmup": self.warmup,
            "max_tokens": self.max_tokens,
            "text": self.text,
            "eval_tasks": self.eval_tasks,
            "eval_limit": self.eval_limit,
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
    eval: Step | None = None  # only with --eval

    @property
    def reused(self) -> list[str]:
        steps = (self.quantize, self.bench, self.quality, self.eval)
        return [s.kind for s in steps if s and s.reused]


@dataclass
class SweepPlan:
    base_id: int
    base_name: str
    request: SweepRequest
    variants: list[VariantPlan]


def quantize_specs(req: SweepRequest, base_name: str, base_id: int) -> list[quantize.Spec]:
    """The grid's quantize specs (validated): bits x group sizes, then each recipe."""
    kw = {"model": base_name, "model_id": base_id, "dtype": req.dtype}
    specs = [quantize.Spec(**kw, bits=b, group_size=g) for b in req.bits for g in req.group_sizes]
    # A recipe sets bits per layer; it takes one group size: 64 when asked for, else the first.
    group = 64 if 64 in req.group_sizes else req.group_sizes[0]
    specs += [quantize.Spec(**kw, recipe=r, group_size=group) for r in req.recipes]
    # A microscaling mode fixes its own bits and group size.
    specs += [quantize.Spec(**kw, mode=m) for m in req.modes]
    return specs


def plan_sweep(reader, req: SweepRequest) -> SweepPlan:
    """Decide every job of the sweep, reusing models, runs and jobs the catalog already has
    (read through a ``Reader``)."""
    base = reader.model(req.base)
    if is_quantized(base):
        from mlxd.vocab.errors import SpecError

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
    protocol = None
    if req.eval_tasks:
        espec = eval_job.Spec(model=base.name, tasks=req.eval_tasks, limit=req.eval_limit)
        req.eval_tasks = espec.tasks  # builtin expanded, paths resolved
        protocol = eval_job.protocol([eval_tasks_sha(t) for t in espec.tasks], espec)
    plans = [
        VariantPlan(
            variant=SWEEP_BASE,
            model=base.name,
            model_id=base.id,
            quantize=None,
            bench=_bench_step(reader, base.name, base.id, None, bench_kw),
            quality=_quality_step(reader, base.name, base.id, None, None, req),
            eval=_eval_step(reader, base.name, base.id, req, protocol),
        )
    ]
    taken: set[str] = set()
    for qspec in quantize_specs(req, base.name, base.id):
        model = find_variant(reader, base.id, qspec)
        after = None
        if model is not None:
            name, model_id = model.name, model.id
            qstep = Step("quantize", job_id=model.created_by_job_id, reused=True)
        else:
            pending = find_pending_quantize(reader, base.id, qspec)
            if pending is not None:
                name, model_id = pending.params["name"], None
                qstep = Step("quantize", job_id=pending.id, reused=True)
            else:
                qspec.name = _free_name(reader, qspec.name, taken)
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
                bench=_bench_step(reader, name, model_id, after, bench_kw),
                quality=_quality_step(reader, name, model_id, base.name, base.id, req),
                eval=_eval_step(reader, name, model_id, req, protocol),
            )
        )
    return SweepPlan(base_id=base.id, base_name=base.name, request=req, variants=plans)


def new_steps(plan: SweepPlan) -> list[tuple[Any, Any]]:
    """The plan's jobs to queue, in order, each with the quantize step it waits on (its
    variant is being made, by this plan or an earlier sweep's job) or None."""
    steps = []
    for v in plan.variants:
        q = v.quantize
        if q is not None and q.spec is not None:
            steps.append((q, None))
        gate = q if q is not None and v.model_id is None else None
        steps += [
            (step, gate)
            for step in (v.bench, v.quality, v.eval)
            if step is not None and step.spec is not None
        ]
    return steps


def record_sweep(store, plan: SweepPlan):
    """The Sweep row of a plan whose new steps have their job ids."""
    variants = [
        {
            "variant": v.variant,
            "model": v.model,
            "model_id": v.model_id,
            "quantize_job": v.quantize.job_id if v.quantize else None,
            "bench_job": v.bench.job_id,
            "quality_job": v.quality.job_id,
            "eval_job": v.eval.job_id if v.eval else None,
            "reused": v.reused,
        }
        for v in plan.variants
    ]
    return store.add_sweep(plan.base_id, plan.request.params(), variants)


# -- what the catalog already has ------------------------------------------------------------


def find_variant(reader, base_id: int, spec: quantize.Spec):
    """A model quantized from ``base_id`` with exactly this recipe, or None."""
    for model in reader.quantized_children(
        base_id, mode=spec.mode, group_size=spec.group_size, bits=spec.bits, recipe=spec.recipe
    ):
        recipe = (model.details or {}).get("recipe", {}).get("quantize", {})
        if recipe.get("dtype") == spec.dtype:
            return model
    return None


def find_pending_quantize(reader, base_id: int, spec: quantize.Spec):
    """A queued or running quantize job that will make this variant, or None."""
    want = {k: getattr(spec, k) for k in ("bits", "group_size", "mode", "recipe", "dtype")}
    for job in reader.jobs(PENDING, kind="quantize"):
        p = job.params
        if p.get("model_id") == base_id and all(p.get(k) == v for k, v in want.items()):
            return job
    return None


def _free_name(reader, name: str, taken: set[str]) -> str:
    """``name``, or ``name-2``, ``-3``... when a model or a queued job already has it."""
    pending = {j.params.get("name") for j in reader.jobs(PENDING, kind="quantize")}
    candidate, n = name, 1
    while candidate in taken or candidate in pending or reader.find_model(candidate) is not None:
        n += 1
        candidate = f"{name}-{n}"
    return candidate


def _same_model(params: dict[str, Any], name: str, model_id: int | None) -> bool:
    return (model_id is not None and params.get("model_id") == model_id) or params.get(
        "model"
    ) == name


def _bench_step(reader, name: str, model_id: int | None, after: int | None, kw) -> Step:
    spec = bench.Spec(model=name, model_id=model_id, **kw)
    if model_id is not None:
        job_id = _finished_bench_job(reader, model_id, spec)
        if job_id is not None:
            return Step("bench", job_id=job_id, reused=True)
    for job in reader.jobs(PENDING, kind="bench"):
        p = job.params
        if _same_model(p, name, model_id) and all(
            p.get(k) == v for k, v in spec.to_params().items() if k not in ("model", "model_id")
        ):
            return Step("bench", job_id=job.id, reused=True)
    return Step("bench", spec=spec)


def _finished_bench_job(reader, model_id: int, spec: bench.Spec) -> int | None:
    """The newest bench job that measured this model at the sweep's point and protocol."""
    point = sweep_point(spec.prompt_tokens[0], spec.gen_tokens[0])
    point["prefill_step_size"] = spec.prefill_step_size[0]
    protocol = {"seed": spec.seed, "trials": spec.trials, "warmup": spec.warmup}
    return reader.newest_bench_job(model_id, {**point, **protocol})


def _quality_step(
    reader, name: str, model_id: int | None, base: str | None, base_id: int | None, req
) -> Step:
    # The base is scored alone (perplexity; KL against itself would say nothing); a variant
    # is compared with the sweep's base, named explicitly rather than found through lineage.
    spec = quality.Spec(
        model=name,
        model_id=model_id,
        base=base,
        base_id=base_id,
        text=req.text,
        max_tokens=req.max_tokens,
    )
    if model_id is not None:
        job_id = _finished_quality_job(reader, model_id, base_id, spec)
        if job_id is not None:
            return Step("quality", job_id=job_id, reused=True)
    for job in reader.jobs(PENDING, kind="quality"):
        p = job.params
        if (
            _same_model(p, name, model_id)
            and p.get("base") == base
            and p.get("text") == spec.text
            and p.get("max_tokens") == spec.max_tokens
        ):
            return Step("quality", job_id=job.id, reused=True)
    return Step("quality", spec=spec)


def eval_tasks_sha(ref: str) -> str:
    from mlxd.jobs.eval_tasks import load

    return load(ref).sha256


def _eval_step(
    reader, name: str, model_id: int | None, req: SweepRequest, protocol: str | None
) -> Step | None:
    """The variant's eval job: alone (its drop is read against the base's run, which
    scored the same items); reused when a run or a queued job already asks the same."""
    if not req.eval_tasks:
        return None
    spec = eval_job.Spec(model=name, model_id=model_id, tasks=req.eval_tasks, limit=req.eval_limit)
    if model_id is not None and protocol is not None:
        done = reader.eval_run_with_protocol(model_id, protocol)
        if done is not None:
            return Step("eval", job_id=done.job_id, reused=True)
    for job in reader.jobs(PENDING, kind="eval"):
        p = job.params
        if (
            _same_model(p, name, model_id)
            and p.get("base") is None
            and all(
                p.get(k) == v for k, v in spec.to_params().items() if k not in ("model", "model_id")
            )
        ):
            return Step("eval", job_id=job.id, reused=True)
    return Step("eval", spec=spec)


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


def _finished_quality_job(reader, model_id: int, base_id: int | None, spec) -> int | None:
    # The same text means the same bytes, not only the same path (the file may have changed).
    for run in reader.quality_runs(model_id, text_sha256=_text_sha256(spec.text), base_id=base_id):
        d = run.details or {}
        if d.get("text_path") == spec.text and d.get("max_tokens") == spec.max_tokens:
            if base_id is not None or d.get("base_from") != "given":
                return run.job_id
    return None
