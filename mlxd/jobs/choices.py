"""The choices job kinds accept, written once.

The CLI's ``click.Choice`` lists, each Spec's checks and the engine's checks are all built from
these tuples, so a value is allowed everywhere or nowhere. Pure Python: the CLI imports it.
"""

from __future__ import annotations

from typing import Any

# Quantization (mx.quantize's table of modes).
BITS = (2, 3, 4, 5, 6, 8)
GROUP_SIZES = (32, 64, 128)
DEFAULT_BITS, DEFAULT_GROUP_SIZE = 4, 64
# Microscaling modes fix their bits and group size (MLX's quantize documentation).
QUANT_MODES: dict[str, tuple[int, int] | None] = {
    "affine": None,
    "mxfp4": (4, 32),
    "nvfp4": (4, 16),
    "mxfp8": (8, 32),
}
# Same list as mlx_lm.convert.QUANT_RECIPES, kept here so validation needs no mlx import.
QUANT_RECIPES = ("mixed_2_6", "mixed_3_4", "mixed_3_6", "mixed_4_6")
# Weights' dtype (convert) and the dtype of scales and unquantized layers (quantize).
DTYPES = ("float16", "bfloat16", "float32")

# Benchmarks: the grid's dimensions, in the order a bench job walks them (the engine's
# BenchPoint fields and the BenchRun columns that tell two points apart).
BENCH_POINT_KEYS = (
    "prompt_tokens",
    "gen_tokens",
    "batch_size",
    "depth",
    "kv_bits",
    "prefill_step_size",
    "max_kv_size",
)
KV_BITS = (2, 3, 4, 5, 6, 8)  # mlx-lm's QuantizedKVCache: any width mx.quantize takes
DEFAULT_PREFILL_STEP_SIZE = 2048


def mode_bits_and_group(mode: str) -> tuple[tuple[int, ...], tuple[int, ...], int, int]:
    """(allowed bits, allowed group sizes, default bits, default group size) of a mode."""
    fixed = QUANT_MODES[mode]
    if fixed is None:
        return BITS, GROUP_SIZES, DEFAULT_BITS, DEFAULT_GROUP_SIZE
    return (fixed[0],), (fixed[1],), fixed[0], fixed[1]


def is_quantized(model: Any) -> bool:
    """Whether a catalog model (a Store or Reader row) holds quantized weights."""
    return (
        model.quant_bits is not None
        or model.quant_mode is not None
        or model.quant_recipe is not None
    )


def quant_label(model: Any) -> str:
    """The quantization as one short label: the recipe, a microscaling mode, '4bit-g64', or ''.

    The catalog's SQL for result rows (mlxd.catalog.read) says the same; a test keeps them in step.
    """
    if model.quant_recipe:
        return model.quant_recipe
    if model.quant_mode and model.quant_mode != "affine":
        return model.quant_mode
    if model.quant_bits:
        return f"{model.quant_bits}bit-g{model.quant_group_size}"
    return ""
