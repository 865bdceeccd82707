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


def read_safetensors_header(path: Path, *, check_sizes: bool = False) -> dict[str, Any]:
    """The JSON header of a safetensors file (the data is not read).

    With ``check_sizes``, every tensor's byte range must match its shape and dtype and lie
    inside the file: a truncated or corrupt download is refused here, not at load time."""
    size = path.stat().st_size
    with open(path, "rb") as f:
        raw = f.read(8)
        if len(raw) < 8:
            raise ModelFolderError(f"{path.name} is not a safetensors file (too short)")
        (n,) = struct.unpack("<Q", raw)
        if n > 100_000_000 or 8 + n > size:
            raise ModelFolderError(f"{path.name} is not a safetensors file (bad header length)")
        try:
            header = json.loads(f.read(n))
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise ModelFolderError(f"{path.name} is not a safetensors file (bad header)") from None
    if check_sizes:
        data = size - 8 - n
        for name, t in header.items():
            if name == "__metadata__":
                continue
            try:
                begin, end = t["data_offsets"]
                count = math.prod(t["shape"])
                bits = DTYPE_BITS.get(t["dtype"])  # a dtype not listed: its size is not judged
            except (KeyError, TypeError, ValueError):
                raise ModelFolderError(
                    f"{path.name}: tensor {name} has a malformed entry"
                ) from None
            if end > data:
                raise ModelFolderError(
                    f"{path.name} is truncated: tensor {name} ends at byte {end:,} of the data, "
                    f"which holds {data:,} (an incomplete download?)"
                )
            want = count * bits // 8 if bits else end - begin
            if end - begin != want:
                raise ModelFolderError(
                    f"{path.name}: tensor {name} has {end - begin:,} bytes, its shape and dtype "
                    f"need {want:,}"
                )
    return header


def check_weights(folder: Path) -> None:
    """Refuse, naming the file, weights mlx-lm could not load: a safetensors file that is
    truncated or has a broken header, or a shard the index lists that is missing. Reads only
    the headers (ModelFolderError, its message starting with the file's full path)."""
    folder = Path(folder)
    weights = sorted(folder.glob("*.safetensors"))
    if not weights:
        raise ModelFolderError(f"{folder} has no *.safetensors weights")
    for w in weights:
        try:
            read_safetensors_header(w, check_sizes=True)
        except ModelFolderError as e:  # its message starts with the file's name
            raise ModelFolderError(f"{w.parent}/{e}") from None
        except OSError as e:
            raise ModelFolderError(f"{w} cannot be read ({e.strerror or e})") from None
    index = folder / "model.safetensors.index.json"
    if index.is_file():
        try:
            shards = set(json.loads(index.read_text()).get("weight_map", {}).values())
        except (OSError, ValueError, AttributeError):
            raise ModelFolderError(f"{index} is not a valid weights index") from None
        for shard in sorted(shards):
            if not (folder / shard).is_file():
                raise ModelFolderError(f"{folder / shard} is missing (listed in {index.name})")


def read_config(path: Path) -> dict[str, Any]:
    """A model folder's config.json as a dict ({} when it is missing or unreadable)."""
    try:
        config = json.loads((Path(path) / "config.json").read_text())
    except (OSError, ValueError):
        return {}
    return config if isinstance(config, dict) else {}


def context_length(config: dict[str, Any]) -> int | None:
    """The longest sequence the model was built for (its position embeddings), if stated."""
    for cfg in (config, config.get("text_config") or {}):
        for key in ("max_position_embeddings", "max_sequence_length", "n_positions"):
            if isinstance(cfg.get(key), int) and cfg[key] > 0:
                return cfg[key]
    return None


# Tokenizer files other than tokenizer.json, hashed as they are when a folder has no
# tokenizer.json (sentencepiece, GPT-2 style vocab + merges, tiktoken).
_OTHER_TOKENIZER_FILES = ("tokenizer.model", "vocab.json", "merges.txt", "tiktoken.model")


def tokenizer_identity(path: Path) -> dict[str, Any] | None:
    """What makes two models' token ids mean the same text, read without MLX:
    ``{"sha256": ..., "tokens": N or None}``. From tokenizer.json: its model type,
    vocabulary, merges and added tokens (not its formatting, so a re-saved copy is the same
    tokenizer); otherwise the bytes of the other tokenizer files. None if there are none."""
    folder = Path(path)
    try:
        data = json.loads((folder / "tokenizer.json").read_text(encoding="utf-8"))
        model = data["model"]
        vocab = model["vocab"]
    except FileNotFoundError:
        data = None
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if data is not None:
        # Merges are "a b" strings or ["a", "b"] pairs depending on the tokenizers version.
        merges = [m if isinstance(m, str) else " ".join(m) for m in model.get("merges") or []]
        added = sorted(
            (t.get("id"), t.get("content"))
            for t in data.get("added_tokens") or []
            if isinstance(t, dict)
        )
        canonical = json.dumps(
            [model.get("type"), vocab, merges, added], sort_keys=True, ensure_ascii=False
        )
        ids = {t[0] for t in added if isinstance(t[0], int)}
        ids |= set(vocab.values()) if isinstance(vocab, dict) else set(range(len(vocab)))
        return {"sha256": hashlib.sha256(canonical.encode()).hexdigest(), "tokens": len(ids)}
    files = [folder / n for n in _OTHER_TOKENIZER_FILES if (folder / n).is_file()]
    if not files:
        return None
    digest = hashlib.sha256()
    for f in files:
        digest.update(f.name.encode() + b"\0" + f.read_bytes())
    return {"sha256": digest.hexdigest(), "tokens": None}


def tokenizer_fingerprint(path: Path) -> str | None:
    """The hash of :func:`tokenizer_identity`: two models share token ids exactly when
    these are equal. None if the folder has no readable tokenizer."""
    found = tokenizer_identity(path)
    return found["sha256"] if found else None


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def folder_size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def inspect_folder(path: Path, *, check: bool = False) -> FolderInfo:
    """Describe the HF or MLX model folder at ``path``; ModelFolderError if it is not one.

    With ``check`` (a folder a user brings), also refuse what mlx-lm could not load: a config
    without a known ``model_type``, truncated or inconsistent safetensors files."""
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
    if not isinstance(config, dict):
        raise ModelFolderError(f"{cfg_path} is not a model config (not a JSON object)")
    weights = sorted(path.glob("*.safetensors"))
    if not weights:
        raise ModelFolderError(f"{path} has no *.safetensors weights")
    if check:
        from mlxd.formats.support import unsupported_reason

        reason = unsupported_reason(config)
        if reason:
            raise ModelFolderError(f"{path.name} cannot be loaded: {reason}")

    quant = config.get("quantization") or config.get("quantization_config")
    headers = [read_safetensors_header(w, check_sizes=check) for w in weights]
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
