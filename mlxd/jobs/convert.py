"""convert: a Hugging Face-format folder to an MLX folder, optionally in another dtype."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from mlxd.jobs.base import (
    FinishContext,
    ModelRefSpec,
    RunContext,
    base_name,
    check_name,
    resolve_input_model,
)
from mlxd.vocab.choices import DTYPES
from mlxd.vocab.errors import SpecError

PRODUCES_MODEL = True
QUIET = False
TIME_LIMIT_S = 6 * 3600  # the default of --timeout


@dataclass
class Spec(ModelRefSpec):
    dtype: str | None = None  # None: float32 on the CPU backend, the model's own on Metal
    name: str | None = None

    def __post_init__(self):
        if self.dtype is not None and self.dtype not in DTYPES:
            raise SpecError(f"unknown dtype '{self.dtype}'; choose from {', '.join(DTYPES)}")
        if self.name is None:
            self.name = f"{base_name(self.model)}-mlx"
        check_name(self.name)


def describe(spec: Spec) -> str:
    return f"convert {spec.model} -> {spec.name}" + (f" ({spec.dtype})" if spec.dtype else "")


def prepare(spec: Spec, store, job=None) -> dict[str, Any]:
    return resolve_input_model(spec, store)


def run(spec: Spec, inputs: dict[str, Any], ctx: RunContext) -> dict[str, Any]:
    from pathlib import Path

    from mlxd.engine.convert import convert_model

    ctx.progress(0.1, f"converting {inputs['model_name']}")
    info = convert_model(Path(inputs["model_path"]), ctx.output_dir, dtype=spec.dtype)
    ctx.progress(1.0, "done")
    return dict(info)


def finish(spec: Spec, inputs: dict[str, Any], result: dict[str, Any], fin: FinishContext) -> None:
    fin.register_model(
        name=spec.name,
        source="convert",
        parent_id=inputs["model_id"],
        synthetic=_parent_synthetic(fin, inputs),
        num_parameters=result.get("num_parameters"),
        details={"recipe": {"convert": {"dtype": result.get("dtype", spec.dtype)}}},
    )


def _parent_synthetic(fin: FinishContext, inputs: dict[str, Any]) -> bool:
    from mlxd.catalog.models import Model

    parent = fin.session.get(Model, inputs["model_id"])
    return bool(parent and parent.synthetic)
