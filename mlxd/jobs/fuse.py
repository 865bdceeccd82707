"""fuse: base model + adapter -> a new catalog model, checked against base + adapter.

On an unquantized base (or with --dequantize) the fused model's greedy tokens must match
base + adapter exactly; on a quantized base (re-quantized after fusing) the KL divergence
must stay under KL_THRESHOLD, and where the adapter moved the model by more than that, the
fused model must keep most of the change. Otherwise the job fails and says what it measured.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mlxd.jobs.base import (
    FinishContext,
    JobFailed,
    ModelRefSpec,
    RunContext,
    resolve_input_model,
)
from mlxd.jobs.synth import check_name
from mlxd.vocab.choices import ADAPTER_FILE

PRODUCES_MODEL = True
QUIET = False
TIME_LIMIT_S = 6 * 3600  # the default of --timeout
KL_THRESHOLD = 0.05  # nats per token, fused (re-quantized) vs base + adapter
KEEP_FRACTION = 0.5  # of the adapter's own KL the fused model may lose at most


@dataclass
class Spec(ModelRefSpec):
    adapter: str = ""
    adapter_id: int | None = None
    dequantize: bool = False
    name: str | None = None

    def __post_init__(self):
        from mlxd.vocab.errors import SpecError

        if not self.adapter:
            raise SpecError("--adapter is needed")
        if self.name is None:
            self.name = f"{Path(self.adapter.rstrip('/')).name}-fused"
        check_name(self.name)


def describe(spec: Spec) -> str:
    deq = " (dequantized)" if spec.dequantize else ""
    return f"fuse {spec.adapter} into {spec.model}{deq} -> {spec.name}"


def prepare(spec: Spec, store, job=None) -> dict[str, Any]:
    from mlxd.catalog.models import Model
    from mlxd.jobs.finetune import check_adapter_base

    inputs = resolve_input_model(spec, store)
    adapter = store.resolve_adapter(
        spec.adapter_id if spec.adapter_id is not None else spec.adapter
    )
    with store.read() as s:
        model = s.get(Model, inputs["model_id"])
    check_adapter_base(adapter, model)
    if adapter.status != "ready":
        raise JobFailed(
            f"adapter '{adapter.name}' is not finished ({adapter.iterations} of "
            f"{adapter.target_iterations} iterations); resume it with 'mlxd finetune "
            f"{model.name} --data {adapter.data_path} --resume {adapter.name}'"
        )
    if not (Path(adapter.path) / ADAPTER_FILE).is_file():
        raise JobFailed(f"adapter '{adapter.name}' has no {ADAPTER_FILE} in {adapter.path}")
    inputs.update(
        adapter_id=adapter.id,
        adapter_name=adapter.name,
        adapter_path=adapter.path,
        fine_tune_type=adapter.fine_tune_type,
    )
    return inputs


def run(spec: Spec, inputs: dict[str, Any], ctx: RunContext) -> dict[str, Any]:
    import dataclasses

    from mlxd.engine.fuse import check_fused, fuse_adapter
    from mlxd.engine.quality import default_text

    model_path, adapter_path = Path(inputs["model_path"]), Path(inputs["adapter_path"])
    ctx.progress(0.1, f"fusing {inputs['adapter_name']} into {inputs['model_name']}")
    fused = fuse_adapter(model_path, adapter_path, ctx.output_dir, dequantize=spec.dequantize)
    ctx.progress(0.6, "checking the fused model against base + adapter")
    _, text = default_text()
    check = check_fused(model_path, adapter_path, ctx.output_dir, text)
    verdict = judge(check)
    if verdict is not None:
        raise JobFailed(verdict)
    ctx.progress(1.0, "done")
    return {**fused, "check": dataclasses.asdict(check)}


def judge(check) -> str | None:
    """None when the fused model passes its check; otherwise what was measured, one line."""
    from mlxd.vocab.fmt import sig

    measured = (
        f"KL {sig(check.kl_mean, 3)} nats/token, top-1 agreement {check.top1_agreement:.1%}, "
        f"adapter's own KL {sig(check.adapter_kl_mean, 3)}"
    )
    if not check.quantized:
        if not check.greedy_match:
            return (
                f"the fused model's greedy tokens differ from base + adapter ({measured}); "
                "the fused folder was not kept"
            )
        return None
    if check.kl_mean > KL_THRESHOLD:
        return f"the fused model drifts from base + adapter: {measured} (limit {KL_THRESHOLD})"
    if (
        check.adapter_kl_mean > KL_THRESHOLD
        and check.kl_mean > KEEP_FRACTION * check.adapter_kl_mean
    ):
        return f"the fused model lost the adapter's effect: {measured}"
    return None


def finish(spec: Spec, inputs: dict[str, Any], result: dict[str, Any], fin: FinishContext) -> None:
    from mlxd.catalog.models import Model

    parent = fin.session.get(Model, inputs["model_id"])
    quantized = result.get("quantized")
    check = result["check"]
    fin.register_model(
        name=spec.name,
        source="fuse",
        parent_id=inputs["model_id"],
        synthetic=bool(parent and parent.synthetic),
        quant_bits=parent.quant_bits if quantized and parent else None,
        quant_group_size=parent.quant_group_size if quantized and parent else None,
        quant_mode=parent.quant_mode if quantized and parent else None,
        quant_recipe=parent.quant_recipe if quantized and parent else None,
        quant_method=parent.quant_method if quantized and parent else None,
        quant_options=parent.quant_options if quantized and parent else None,
        details={
            "adapter": {
                "id": inputs["adapter_id"],
                "name": inputs["adapter_name"],
                "fine_tune_type": inputs["fine_tune_type"],
            },
            "recipe": {"fuse": {"adapter": inputs["adapter_name"], "dequantize": spec.dequantize}},
            "fuse_check": {
                **{k: v for k, v in check.items() if not k.startswith("greedy_tokens")},
                "kl_threshold": KL_THRESHOLD if check["quantized"] else None,
                "rule": "KL under the threshold"
                if check["quantized"]
                else "greedy tokens match exactly",
            },
        },
    )
    fin.summary.update(
        adapter=inputs["adapter_name"],
        kl_mean=float(f"{check['kl_mean']:.3g}"),
        top1_agreement=float(f"{check['top1_agreement']:.4g}"),
        greedy_match=check["greedy_match"],
    )
