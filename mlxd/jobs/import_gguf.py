"""import_gguf: a llama-family GGUF file (llama.cpp's format) -> an MLX model in the catalog.

Quantized tensors (Q4_0/Q4_1/Q8_0) stay quantized (MLX affine, group size 32, float32
scales) unless the spec asks to dequantize them to float32. The lineage of the new model is
the file itself: its path and sha256 go into the model's details (there is no parent row).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mlxd.jobs.base import FinishContext, JobFailed, JobSpec, RunContext, check_name
from mlxd.vocab.errors import SpecError

PRODUCES_MODEL = True
QUIET = False
TIME_LIMIT_S = 6 * 3600  # the default of --timeout
DEQUANTIZED_SUFFIX = "-f32"


def default_name(file: str, dequantize: bool = False) -> str:
    """A catalog name from the file's stem: 'SmolLM2-135M-Instruct.Q4_1' (+ '-f32').

    The stem, not general.name: files in the wild name their quantization in the stem
    ('...Q4_1.gguf') while general.name is often a training-run label.
    """
    stem = Path(file).name.removesuffix(".gguf")
    name = re.sub(r"[^A-Za-z0-9._-]+", "-", stem).strip("-._") or "gguf-model"
    if name.isdigit():
        name = f"gguf-{name}"
    return name + (DEQUANTIZED_SUFFIX if dequantize else "")


@dataclass
class Spec(JobSpec):
    file: str  # absolute path of the .gguf
    name: str | None = None
    dequantize: bool = False

    def __post_init__(self):
        if not self.file:
            raise SpecError("a GGUF file is needed")
        if not Path(self.file).is_absolute():
            raise SpecError(f"the GGUF file must be an absolute path, not '{self.file}'")
        if self.name is None:
            self.name = default_name(self.file, self.dequantize)
        check_name(self.name)


def describe(spec: Spec) -> str:
    how = " (dequantized to float32)" if spec.dequantize else ""
    return f"import {Path(spec.file).name} -> {spec.name}{how}"


def prepare(spec: Spec, store, job=None) -> dict[str, Any]:
    # The header check is pure Python (no mlx), so a refused file fails here, in the daemon,
    # before a child process is started; the CLI has usually refused it already.
    from mlxd.formats.gguf import GGUFError, check_gguf

    path = Path(spec.file)
    if not path.is_file():
        raise JobFailed(f"GGUF file {path} does not exist (was it moved or deleted?)")
    try:
        header = check_gguf(path, dequantize=spec.dequantize)
    except GGUFError as e:
        raise JobFailed(str(e)) from None
    except OSError as e:
        raise JobFailed(f"cannot read {path}: {e.strerror or e}") from None
    return {"file": str(path), "size_bytes": path.stat().st_size, "tensors": len(header.tensors)}


def run(spec: Spec, inputs: dict[str, Any], ctx: RunContext) -> dict[str, Any]:
    from mlxd.engine.gguf import import_gguf

    how = "dequantizing to float32" if spec.dequantize else "keeping its quantization"
    ctx.progress(0.05, f"importing {Path(inputs['file']).name} ({how})")
    record = import_gguf(Path(inputs["file"]), ctx.output_dir, dequantize=spec.dequantize)
    ctx.progress(1.0, "done")
    return dict(record)


def finish(spec: Spec, inputs: dict[str, Any], result: dict[str, Any], fin: FinishContext) -> None:
    quant = result.get("quantization") or {}
    # Per-layer entries (an 8-bit embedding next to 4-bit linears) do not fit the
    # quant_* columns, which hold the default; the details keep the exceptions.
    overrides = {k: v for k, v in quant.items() if isinstance(v, dict)}
    details: dict[str, Any] = {
        "gguf_file": inputs["file"],
        "gguf_sha256": result.get("source_sha256"),
        "gguf_name": result.get("gguf_name"),
        "tensor_types": result.get("tensor_types"),
        "dequantized": spec.dequantize,
    }
    if overrides:
        details["quantization_overrides"] = overrides
    fin.register_model(
        name=spec.name,
        source="gguf",
        parent_id=None,
        synthetic=False,
        architecture=result.get("architecture"),
        num_parameters=result.get("num_parameters"),
        quant_bits=quant.get("bits"),
        quant_group_size=quant.get("group_size"),
        quant_mode=quant.get("mode"),
        details=details,
    )
    fin.summary["sha256"] = result.get("source_sha256")
