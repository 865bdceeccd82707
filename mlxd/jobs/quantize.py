"""quantize: affine (2-8 bits), microscaling (mxfp4, nvfp4, mxfp8) or mixed-precision recipes."""

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
from mlxd.jobs.convert import _parent_synthetic
from mlxd.vocab.choices import (
    BITS,
    DEFAULT_BITS,
    DEFAULT_GROUP_SIZE,
    DTYPES,
    GROUP_SIZES,
    QUANT_MODES,
    QUANT_RECIPES,
    quant_label,
)
from mlxd.vocab.errors import SpecError

PRODUCES_MODEL = True
QUIET = False
TIME_LIMIT_S = 6 * 3600  # the default of --timeout


def check_explicit_choices(
    mode: str, recipe: str | None, bits: int | None, group_size: int | None
) -> None:
    """Refuse options the mode or recipe would silently override (given ones are not None)."""
    fixed = QUANT_MODES.get(mode)
    if fixed and bits is not None and bits != fixed[0]:
        raise SpecError(f"--mode {mode} is {fixed[0]}-bit; leave out --bits {bits}")
    if fixed and group_size is not None and group_size != fixed[1]:
        raise SpecError(
            f"--mode {mode} uses groups of {fixed[1]}; leave out --group-size {group_size}"
        )
    if recipe and bits is not None:
        raise SpecError(f"--recipe {recipe} sets the bits of each layer; leave out --bits {bits}")


@dataclass
class Spec(ModelRefSpec):
    bits: int = DEFAULT_BITS
    group_size: int = DEFAULT_GROUP_SIZE
    mode: str = "affine"
    recipe: str | None = None
    dtype: str | None = None  # of scales and unquantized layers; None: backend default
    name: str | None = None

    def __post_init__(self):
        if self.mode not in QUANT_MODES:
            raise SpecError(f"unknown mode '{self.mode}'; choose from {', '.join(QUANT_MODES)}")
        if self.recipe is not None and self.recipe not in QUANT_RECIPES:
            raise SpecError(
                f"unknown recipe '{self.recipe}'; choose from {', '.join(QUANT_RECIPES)}"
            )
        if self.recipe is not None and self.mode != "affine":
            raise SpecError("--recipe works with the affine mode only")
        fixed = QUANT_MODES[self.mode]
        if fixed:
            self.bits, self.group_size = fixed
        else:
            if self.bits not in BITS:
                raise SpecError(f"--bits must be one of {', '.join(map(str, BITS))}")
            if self.group_size not in GROUP_SIZES:
                raise SpecError(f"--group-size must be one of {', '.join(map(str, GROUP_SIZES))}")
        if self.dtype is not None and self.dtype not in DTYPES:
            raise SpecError(f"unknown dtype '{self.dtype}'; choose from {', '.join(DTYPES)}")
        if self.name is None:
            self.name = f"{base_name(self.model)}-{self.variant}"
        check_name(self.name)

    @property
    def variant(self) -> str:
        """The recipe as a short name: '4bit-g64', 'mxfp4', 'mixed_3_6-g64'."""
        return quant_label(
            recipe=self.recipe, mode=self.mode, bits=self.bits, group_size=self.group_size
        )


def describe(spec: Spec) -> str:
    return f"quantize {spec.model} -> {spec.name}"


def prepare(spec: Spec, store, job=None) -> dict[str, Any]:
    return resolve_input_model(spec, store)


def run(spec: Spec, inputs: dict[str, Any], ctx: RunContext) -> dict[str, Any]:
    from pathlib import Path

    from mlxd.engine.convert import quantize_model

    ctx.progress(0.1, f"quantizing {inputs['model_name']} to {spec.variant}")
    info = quantize_model(
        Path(inputs["model_path"]),
        ctx.output_dir,
        bits=spec.bits,
        group_size=spec.group_size,
        mode=spec.mode,
        recipe=spec.recipe,
        dtype=spec.dtype,
    )
    ctx.progress(1.0, "done")
    return dict(info)


def finish(spec: Spec, inputs: dict[str, Any], result: dict[str, Any], fin: FinishContext) -> None:
    fin.register_model(
        name=spec.name,
        source="quantize",
        parent_id=inputs["model_id"],
        synthetic=_parent_synthetic(fin, inputs),
        quant_bits=None if spec.recipe else result.get("bits", spec.bits),
        quant_group_size=result.get("group_size", spec.group_size),
        quant_mode=spec.mode,
        quant_recipe=spec.recipe,
        bits_per_weight=result.get("bits_per_weight"),
        num_parameters=result.get("num_parameters"),
        details={
            "recipe": {
                "quantize": {
                    "bits": spec.bits,
                    "group_size": spec.group_size,
                    "mode": spec.mode,
                    "recipe": spec.recipe,
                    "dtype": spec.dtype,
                }
            }
        },
    )
    fin.summary["bits_per_weight"] = result.get("bits_per_weight")
