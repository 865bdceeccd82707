"""The choices job kinds accept, and the names every room uses for them, written once.

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


def quant_label(
    *, recipe: str | None, mode: str | None, bits: int | None, group_size: int | None
) -> str:
    """The quantization as one short label, '' for unquantized weights: the recipe with its
    group size ('mixed_3_6-g64'), a microscaling mode alone ('mxfp4': the mode fixes its group
    size), or bits and group size ('4bit-g64'). It is the suffix quantize gives a new model's
    name, and what results, reports and `models list` print.

    The catalog's SQL for result rows (``mlxd.catalog.read``'s ``QUANT_LABEL``) says the same;
    tests/test_vocab.py checks every choice through both, on SQLite and PostgreSQL.
    """
    group = f"-g{group_size}" if group_size else ""
    if recipe:
        return f"{recipe}{group}"
    if mode and mode != "affine":
        return mode
    if bits:
        return f"{bits}bit{group}"
    return ""


def model_quant_label(model: Any) -> str:
    """`quant_label` of a catalog model (a Store or Reader row)."""
    return quant_label(
        recipe=model.quant_recipe,
        mode=model.quant_mode,
        bits=model.quant_bits,
        group_size=model.quant_group_size,
    )


# The quantization methods (mlx-lm's round-to-nearest and its learned ones); a model records
# its method in ``quant_method`` (NULL: rtn, every model made before the learned methods).
QUANT_METHODS = ("rtn", "awq", "gptq", "dwq", "dynamic")


def quant_method(model: Any) -> str | None:
    """How a catalog model (a row or a dict with the model's columns) was quantized: its
    ``quant_method`` or "rtn"; None for unquantized weights."""
    get = model.get if isinstance(model, dict) else lambda k, d=None: getattr(model, k, d)
    if get("quant_bits") is None and get("quant_mode") is None and get("quant_recipe") is None:
        return None
    return get("quant_method") or "rtn"


# Sweeps: the unquantized variant's name, and the one benchmark point each variant measures.
SWEEP_BASE = "base"


def sweep_point(prompt_tokens: int, gen_tokens: int) -> dict[str, Any]:
    """The one benchmark point a sweep measures for each variant."""
    return {
        "prompt_tokens": prompt_tokens,
        "gen_tokens": gen_tokens,
        "batch_size": 1,
        "depth": 0,
        "kv_bits": None,
        "prefill_step_size": DEFAULT_PREFILL_STEP_SIZE,
        "max_kv_size": None,
    }


# Fine-tuning (mlx-lm's names).
FINE_TUNE_TYPES = ("lora", "dora", "full")
OPTIMIZERS = ("adam", "adamw", "muon", "sgd", "adafactor")
ADAPTER_FILE = "adapters.safetensors"  # an adapter's weights (the last iteration's)
ADAPTER_CONFIG_FILE = "adapter_config.json"


def checkpoint_name(iteration: int) -> str:
    """mlx-lm's name for the adapter weights saved at ``iteration``."""
    return f"{iteration:07d}_{ADAPTER_FILE}"


def optimizer_name(iteration: int) -> str:
    """The optimizer's state saved beside checkpoint `iteration` (mlx-lm saves none), so a
    resumed run continues Adam's moments and the step count instead of starting them over."""
    return f"{iteration:07d}_optimizer.safetensors"


# The team server's roles (issue 20), lowest first: viewers read; submitters queue and cancel
# their own jobs; admins cancel anyone's, remove models and manage users.
ROLES = ("viewer", "submitter", "admin")
