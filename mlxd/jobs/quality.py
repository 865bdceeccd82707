"""quality: perplexity on a fixed text and, against a base model, KL divergence and agreement."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mlxd.jobs.base import (
    FinishContext,
    JobFailed,
    ModelRefSpec,
    RunContext,
    add_model_input,
    resolve_input_model,
)
from mlxd.vocab.errors import SpecError

PRODUCES_MODEL = False
QUIET = False
TIME_LIMIT_S = 6 * 3600  # the default of --timeout
MIN_MAX_TOKENS = 16


@dataclass
class Spec(ModelRefSpec):
    base: str | None = None  # REF of the model to compare with; None: from lineage
    base_id: int | None = None
    text: str | None = None  # a text file's path; None: the text that ships with mlxd
    max_tokens: int | None = None
    # Score the model + this adapter (unfused); the base then defaults to the model alone.
    adapter: str | None = None
    adapter_id: int | None = None

    def __post_init__(self):
        if self.max_tokens is not None and self.max_tokens < MIN_MAX_TOKENS:
            raise SpecError(f"--text-tokens must be at least {MIN_MAX_TOKENS}")
        if self.text is not None:
            path = Path(self.text).expanduser()
            if not path.is_file():
                raise SpecError(f"text file '{self.text}' not found")
            if path.stat().st_size == 0:
                raise SpecError(f"text file '{self.text}' is empty")
            try:
                path.read_text(encoding="utf-8-sig")
            except UnicodeDecodeError:
                raise SpecError(f"text file '{self.text}' is not UTF-8 text") from None
            # The daemon runs elsewhere: keep the path it can open whatever its cwd.
            self.text = str(path.resolve())


def describe(spec: Spec) -> str:
    against = f" vs {spec.base}" if spec.base else ""
    if spec.adapter:
        against = f" + {spec.adapter} vs {spec.base or spec.model}"
    text = f" on {Path(spec.text).name}" if spec.text else ""
    limit = f" (max {spec.max_tokens} tokens)" if spec.max_tokens else ""
    return f"quality {spec.model}{against}{text}{limit}"


def prepare(spec: Spec, store, job=None) -> dict[str, Any]:
    inputs = resolve_input_model(spec, store)
    if spec.adapter is not None:
        from mlxd.jobs.finetune_use import adapter_inputs

        ref = spec.adapter_id if spec.adapter_id is not None else spec.adapter
        inputs.update(adapter_inputs(store, ref, inputs["model_id"], with_fused=False))
    if spec.adapter is not None and spec.base is None and spec.base_id is None:
        base = store.resolve_model(inputs["model_id"])  # the adapter against its own base
    elif spec.base is not None or spec.base_id is not None:
        base = store.resolve_model(spec.base_id if spec.base_id is not None else spec.base)
        if base.id == inputs["model_id"] and spec.adapter is None:
            raise JobFailed(f"'{base.name}' is the model itself; compare it with another base")
    else:
        from mlxd.catalog.read import Reader

        with Reader(store.paths) as reader:
            base = lineage_base(reader, inputs["model_id"])
    inputs.update(base_id=base.id if base else None, base_name=base.name if base else None)
    if base is None:
        inputs["base_path"] = None
    elif inputs.get("hub_fetch", {}).get("model_path") and base.id == inputs["model_id"]:
        inputs.setdefault("hub_fetch", {})["base_path"] = inputs["hub_fetch"]["model_path"]
        inputs["base_path"] = None
    else:
        add_model_input(inputs, store, base, "base_path")
    return inputs


def lineage_base(reader, model_id: int):
    """The nearest ancestor that is not quantized and is another model, or None (read
    through a ``Reader``).

    For a quantized model that is its unquantized source. Ancestors whose folder is gone are
    passed over: the next one up holds the same weights in another format.
    """
    from mlxd.vocab.choices import is_quantized

    model = reader.model_by_id(model_id)
    for parent in reader.ancestors(model_id):
        if not is_quantized(parent) and parent.path != model.path and Path(parent.path).is_dir():
            return parent
    return None


def run(spec: Spec, inputs: dict[str, Any], ctx: RunContext) -> dict[str, Any]:
    import dataclasses
    import time

    from mlxd.engine.backend import system_facts
    from mlxd.engine.quality import default_text, evaluate_quality

    if spec.text is None:
        text_name, text = default_text()
    else:
        text_name, text = Path(spec.text).name, Path(spec.text).read_text(encoding="utf-8-sig")
    with_adapter = f" + {inputs['adapter_name']}" if inputs.get("adapter_path") else ""
    ctx.progress(0.0, f"scoring {inputs['model_name']}{with_adapter} on {text_name}")
    tic = time.perf_counter()
    result = evaluate_quality(
        Path(inputs["model_path"]),
        text,
        base_path=Path(inputs["base_path"]) if inputs.get("base_path") else None,
        adapter_path=Path(inputs["adapter_path"]) if inputs.get("adapter_path") else None,
        max_tokens=spec.max_tokens,
        on_progress=ctx.progress,
    )
    out = dataclasses.asdict(result)
    out.update(text_name=text_name, elapsed_s=time.perf_counter() - tic, system=system_facts())
    return out


def finish(spec: Spec, inputs: dict[str, Any], result: dict[str, Any], fin: FinishContext) -> None:
    import dataclasses

    from mlxd.catalog.models import QualityRun, row_from
    from mlxd.engine.types import QualityResult

    system = fin.store.system_for(result["system"], session=fin.session)
    figures = QualityResult(**{f.name: result[f.name] for f in dataclasses.fields(QualityResult)})
    row = row_from(
        QualityRun,
        figures,
        job_id=fin.job.id,
        model_id=inputs["model_id"],
        base_model_id=inputs.get("base_id"),
        adapter_id=inputs.get("adapter_id"),
        system_id=system.id,
        text_name=result["text_name"],
        details={
            "text_path": spec.text,
            "max_tokens": spec.max_tokens,
            "base_from": "given"
            if spec.base or spec.base_id
            else "model without the adapter"
            if spec.adapter
            else "lineage",
            "elapsed_s": result.get("elapsed_s"),
        },
    )
    fin.session.add(row)
    fin.session.flush()
    if inputs.get("adapter_name"):
        fin.summary["adapter"] = inputs["adapter_name"]
    fin.summary.update(
        quality_run_id=row.id,
        tokens=row.tokens,
        perplexity=_short(row.perplexity),
        base=inputs.get("base_name"),
        kl_mean=_short(row.kl_mean),
        top1_agreement=_short(row.top1_agreement),
    )


def _short(x: float | None) -> float | None:
    # Six significant digits read well in "Job N succeeded: ..."; the row keeps the full value.
    return None if x is None else float(f"{x:.6g}")
