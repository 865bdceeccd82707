"""Reading a model folder without loading it: config, weights' headers, size on disk.

Pure Python (json + the safetensors header format), so `mlxd models add` and the CLI
stay fast and never import mlx.
"""

from __future__ import annotations

import hashlib
import json
import math
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

DTYPE_BITS = {
    "F64": 64, "F32": 32, "F16": 16, "BF16": 16, "I64": 64, "I32": 32, "U32": 32,
    "I16": 16, "U16": 16, "I8": 8, "U8": 8, "BOOL": 8, "F8_E4M3": 8, "F8_E5M2": 8,
}  # fmt: skip
SAFETENSORS_DTYPE_NAMES = {"F32": "float32", "F16": "float16", "BF16": "bfloat16"}


def dtype_bits(dtype: str | None) -> int | None:
    """Bits per element of a dtype named as safetensors does (F16) or as MLX does (float16)."""
    if dtype is None:
        return None
    names = {v: k for k, v in SAFETENSORS_DTYPE_NAMES.items()}
    return DTYPE_BITS.get(names.get(dtype, dtype))


class ModelFolderError(ValueError):
    pass


@dataclass
class FolderInfo:
    path: Path
    format: str  # "hf" or "mlx"
    architecture: str | None
    dtype: str | None
    size_bytes: int
    num_parameters: int | None
    quantization: dict[str, Any] | None
    config: dict[str, Any] = field(repr=False, default_factory=dict)

    @property
    def bits_per_weight(self) -> float | None:
        if not self.num_parameters:
            return None
        weight_bytes = sum(p.stat().st_size for p in self.path.glob("*.safetensors"))
        return weight_bytes * 8 / self.num_parameters


def read_safetensors_header(path: Path) -> dict[str, Any]:
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        if n > 100_000_000:
            raise ModelFolderError(f"{path.name} is not a safetensors file")
        return json.loads(f.read(n))


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def folder_size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def inspect_folder(path: Path) -> FolderInfo:
    """Describe the HF or MLX model folder at ``path``; ModelFolderError if it is not one."""
    path = Path(path).expanduser().resolve()
    if not path.is_dir():
        raise ModelFolderError(f"{path} is not a folder")
    cfg_path = path / "config.json"
    if not cfg_path.is_file():
        raise ModelFolderError(f"{path} is not a model folder (no config.json)")
    try:
        config = json.loads(cfg_path.read_text())
    except json.JSONDecodeError as e:
        raise ModelFolderError(f"{cfg_path} is not valid JSON ({e.msg})") from None
    weights = sorted(path.glob("*.safetensors"))
    if not weights:
        raise ModelFolderError(f"{path} has no *.safetensors weights")

    quant = config.get("quantization") or config.get("quantization_config")
    headers = [read_safetensors_header(w) for w in weights]
    is_mlx = any(h.get("__metadata__", {}).get("format") == "mlx" for h in headers)
    dtypes: dict[str, int] = {}
    params = 0
    for header in headers:
        for name, t in header.items():
            if name == "__metadata__":
                continue
            n = math.prod(t["shape"])
            if name.endswith((".scales", ".biases")) and quant:
                continue
            if t["dtype"] == "U32" and quant:
                bits = _bits_for(name, quant)
                n = n * 32 // bits
            else:
                dtypes[t["dtype"]] = dtypes.get(t["dtype"], 0) + n
            params += n
    main_dtype = max(dtypes, key=dtypes.get) if dtypes else None
    return FolderInfo(
        path=path,
        format="mlx" if (is_mlx or "quantization" in config) else "hf",
        architecture=config.get("model_type"),
        dtype=SAFETENSORS_DTYPE_NAMES.get(main_dtype, main_dtype),
        size_bytes=folder_size(path),
        num_parameters=params or None,
        quantization=quant if isinstance(quant, dict) else None,
        config=config,
    )


def _bits_for(tensor_name: str, quant: dict[str, Any]) -> int:
    # Per-layer overrides are keyed by the module path ("model.layers.0.mlp.down_proj").
    module = tensor_name.rsplit(".", 1)[0]
    layer = quant.get(module)
    if isinstance(layer, dict) and "bits" in layer:
        return int(layer["bits"])
    return int(quant.get("bits", 4))
