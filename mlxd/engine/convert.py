"""Convert and quantize models with mlx_lm.convert, plus cheap facts about a model folder."""

from __future__ import annotations

import contextlib
import json
import sys
from pathlib import Path
from typing import Any

from mlxd.vocab.choices import DTYPES, QUANT_MODES, QUANT_RECIPES, mode_bits_and_group

from .types import QuantizeResult


def default_dtype() -> str | None:
    """float32 off Metal (CPU half precision is the slow path); None keeps mlx-lm's defaults."""
    import mlx.core as mx

    if mx.default_device() == mx.cpu or not mx.metal.is_available():
        return "float32"
    return None


def check_quant_params(
    bits: int | None, group_size: int | None, mode: str, recipe: str | None
) -> tuple[int, int]:
    """Validate quantization settings; returns (bits, group_size), mode defaults filled in."""
    if mode not in QUANT_MODES:
        raise ValueError(
            f"Quantization mode must be one of {', '.join(QUANT_MODES)}, not {mode!r}."
        )
    allowed_bits, allowed_groups, default_bits, default_group = mode_bits_and_group(mode)
    bits = default_bits if bits is None else bits
    group_size = default_group if group_size is None else group_size
    if bits not in allowed_bits:
        raise ValueError(
            f"{mode} quantization supports bits {'/'.join(map(str, allowed_bits))}, not {bits}."
        )
    if group_size not in allowed_groups:
        raise ValueError(
            f"{mode} quantization supports group size "
            f"{'/'.join(map(str, allowed_groups))}, not {group_size}."
        )
    if recipe is not None:
        if recipe not in QUANT_RECIPES:
            raise ValueError(f"Recipe must be one of {', '.join(QUANT_RECIPES)}, not {recipe!r}.")
        if mode != "affine":
            raise ValueError(f"Mixed recipes only support affine quantization, not {mode}.")
    return bits, group_size


def convert_model(src: Path, out_dir: Path, *, dtype: str | None = None) -> dict[str, Any]:
    """HF (or MLX) folder -> MLX folder at out_dir, which must not exist yet.

    dtype None means default_dtype(), and failing that the model's own torch_dtype.
    Returns {"path", "dtype", "num_parameters", "bits_per_weight"}.
    """
    dtype = _check_dtype(dtype)
    _check_paths(src, out_dir)
    from mlx_lm import convert

    with _stdout_to_stderr():
        convert(str(src), str(out_dir), dtype=dtype)
    return {"path": str(out_dir), "dtype": dtype, **model_info(out_dir)}


def quantize_model(
    src: Path,
    out_dir: Path,
    *,
    bits: int | None = None,
    group_size: int | None = None,
    mode: str = "affine",
    recipe: str | None = None,
    dtype: str | None = None,
) -> dict[str, Any]:
    """Quantize src (HF or unquantized MLX folder) into out_dir, which must not exist yet.

    bits/group_size None take the mode's default (affine 4/64, mxfp4 4/32, nvfp4 4/16,
    mxfp8 8/32); the fp modes allow nothing else.
    dtype (None: default_dtype()) is the dtype of the unquantized layers and of the scales.
    Returns the fields of QuantizeResult plus "path".
    """
    bits, group_size = check_quant_params(bits, group_size, mode, recipe)
    dtype = _check_dtype(dtype)
    _check_paths(src, out_dir)
    check_source(src, group_size)
    from mlx_lm import convert

    with _stdout_to_stderr():
        convert(
            str(src),
            str(out_dir),
            quantize=True,
            q_bits=bits,
            q_group_size=group_size,
            q_mode=mode,
            quant_predicate=recipe,
            dtype=dtype,
        )
    info = model_info(out_dir)
    result = QuantizeResult(
        bits_per_weight=info["bits_per_weight"],
        num_parameters=info["num_parameters"],
        bits=bits,
        group_size=group_size,
        mode=mode,
        recipe=recipe,
        dtype=dtype,
    )
    return {**result.__dict__, "path": str(out_dir)}


def check_source(src: Path, group_size: int) -> dict[str, Any]:
    """The config.json of a model quantize may start from (unquantized, its widths divisible
    by the group size); ValueError otherwise."""
    config = json.loads((Path(src) / "config.json").read_text())
    if "quantization" in config or "quantization_config" in config:
        raise ValueError(f"{src} is already quantized; quantize its unquantized parent instead.")
    # mlx-lm silently leaves a layer unquantized when its input width is not a multiple of
    # the group size; with hidden_size that would be nearly every layer.
    # (intermediate_size is the input width of the MLP's down projection.)
    for key in ("hidden_size", "intermediate_size"):
        width = config.get(key)
        if isinstance(width, int) and width % group_size:
            raise ValueError(
                f"Group size {group_size} does not divide this model's {key} {width}; "
                "choose a smaller group size."
            )
    return config


def model_info(path: Path) -> dict[str, Any]:
    """{"num_parameters", "bits_per_weight", "model_bytes"} of a model folder (lazy load)."""
    from mlx.utils import tree_flatten
    from mlx_lm.utils import compute_bits_per_weight, get_total_parameters, load_model

    # lazy=True: sizes come from shapes and dtypes, so no weights need reading.
    model, _ = load_model(Path(path), lazy=True)
    return {
        "num_parameters": int(get_total_parameters(model)),
        "bits_per_weight": float(compute_bits_per_weight(model)),
        "model_bytes": int(sum(v.nbytes for _, v in tree_flatten(model.parameters()))),
    }


def _check_dtype(dtype: str | None) -> str | None:
    if dtype is None:
        return default_dtype()
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {', '.join(DTYPES)}, not {dtype!r}.")
    return dtype


def _check_paths(src: Path, out_dir: Path) -> None:
    if not (Path(src) / "config.json").is_file():
        raise ValueError(f"{src} is not a model folder (no config.json).")
    if Path(out_dir).exists():
        raise ValueError(f"Output folder {out_dir} already exists.")


@contextlib.contextmanager
def _stdout_to_stderr():
    """mlx_lm.convert prints progress on stdout, which a job child keeps for its JSON lines."""
    with contextlib.redirect_stdout(sys.stderr):
        yield
