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
# Quantization methods: round-to-nearest (mlx-lm's convert, the default) or a learned method
# from mlx_lm/quant/ fed with calibration text. mlx-lm's GPTQ packs only 2, 4 and 8 bits.
QUANT_METHODS = ("rtn", "awq", "gptq", "dwq", "dynamic")
DEFAULT_QUANT_METHOD = "rtn"
METHOD_BITS: dict[str, tuple[int, ...]] = {
    "rtn": BITS,
    "awq": BITS,
    "gptq": (2, 4, 8),
    "dwq": (2, 3, 4, 5, 6),  # DWQ trains the scales of layers below 8 bits only
    "dynamic": (2, 3, 4, 5, 6),  # the low bits; the sensitive layers get the next width up
}
# Architectures mlx-lm's AWQ knows (mlx_lm.quant.awq.AWQ_MODEL_CONFIGS).
AWQ_ARCHITECTURES = (
    "llama", "mistral", "ministral3", "mistral3", "llava", "qwen2", "qwen3", "gemma3_text",
    "gemma3", "deepseek_v2",
)  # fmt: skip
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
    *,
    recipe: str | None,
    mode: str | None,
    bits: int | None,
    group_size: int | None,
    method: str | None = None,
    bits_per_weight: float | None = None,
) -> str:
    """The quantization as one short label, '' for unquantized weights: the recipe with its
    group size ('mixed_3_6-g64'), a microscaling mode alone ('mxfp4': the mode fixes its group
    size), or bits and group size ('4bit-g64'). A learned method comes first ('awq-3bit-g64',
    'gptq-4bit-g64'); dynamic bit allocation mixes widths, so its label is its bits per weight
    to one decimal ('dynamic-4.5bpw': the target in a new model's name, the real figure for a
    catalog model). rtn (or no method: rows older than the methods) adds nothing. It is the
    suffix quantize gives a new model's name, and what results, reports and `models list` print.

    The catalog's SQL for result rows (``mlxd.catalog.read``'s ``QUANT_LABEL``) says the same;
    tests/test_vocab.py checks every choice through both, on SQLite and PostgreSQL.
    """
    if method == "dynamic":
        if bits_per_weight is None:
            return "dynamic"
        # Halves round away from zero, on the decimal the float prints as: what SQL's round
        # does on SQLite and on PostgreSQL's numeric (Python's format rounds 6.25 to 6.2).
        from decimal import ROUND_HALF_UP, Decimal

        tenths = Decimal(repr(float(bits_per_weight))).quantize(Decimal("0.1"), ROUND_HALF_UP)
        return f"dynamic-{tenths}bpw"
    if method and method != DEFAULT_QUANT_METHOD:
        inner = quant_label(recipe=recipe, mode=mode, bits=bits, group_size=group_size)
        return f"{method}-{inner}" if inner else method
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
        method=getattr(model, "quant_method", None),
        bits_per_weight=getattr(model, "bits_per_weight", None),
    )


def quant_method_facts(model: Any) -> list[tuple[str, str]]:
    """How a learned method made a catalog model, as (label, text) lines: the method with its
    options, and the calibration data (source, samples x length, tokens, sha256). Empty for
    rtn, which reads no data."""
    method = getattr(model, "quant_method", None)
    if not method or method == DEFAULT_QUANT_METHOD:
        return []
    qo = getattr(model, "quant_options", None) or {}
    opts = ", ".join(f"{k} {v}" for k, v in (qo.get("options") or {}).items() if v is not None)
    facts = [("quant method", method + (f" ({opts})" if opts else ""))]
    cal = qo.get("calibration") or {}
    if cal:
        facts.append(
            (
                "calibration",
                f"{cal.get('source')}: {cal.get('samples')} samples of {cal.get('length')} "
                f"tokens ({cal.get('tokens') or 0:,} in the text), sha256 "
                f"{str(cal.get('sha256'))[:12]}",
            )
        )
    dwq = qo.get("dwq") or {}
    if dwq.get("final_loss") is not None:
        resumed = f", resumed at step {dwq['resumed_at']}" if dwq.get("resumed_at") else ""
        facts.append(
            ("dwq", f"{dwq.get('steps')} steps, final loss {dwq['final_loss']:.4g}{resumed}")
        )
    return facts


# A model records its method in ``quant_method`` (NULL: rtn, every model made before the
# learned methods; QUANT_METHODS above lists them).
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
