"""Read GGUF files (llama.cpp's format) without MLX: the header, and what can be refused.

`read_gguf_header` reads the metadata and the tensor table in pure Python; `check_gguf`
decides from the header alone whether `mlxd.engine.gguf.import_gguf` can turn the file into
an MLX model, so the CLI can refuse a file before anything is queued.
"""

from __future__ import annotations

import os
import re
import struct
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

__all__ = [
    "GGUFError",
    "GGUFHeader",
    "GGUFTensorInfo",
    "SUPPORTED_TENSOR_TYPES",
    "check_gguf",
    "read_gguf_header",
]


class GGUFError(ValueError):
    """A GGUF file that this importer cannot (or will not) turn into an MLX model."""


# ggml_type ids (ggml.h) -> the names llama.cpp prints.
GGML_TYPE_NAMES: dict[int, str] = {
    0: "F32", 1: "F16", 2: "Q4_0", 3: "Q4_1", 6: "Q5_0", 7: "Q5_1", 8: "Q8_0", 9: "Q8_1",
    10: "Q2_K", 11: "Q3_K", 12: "Q4_K", 13: "Q5_K", 14: "Q6_K", 15: "Q8_K",
    16: "IQ2_XXS", 17: "IQ2_XS", 18: "IQ3_XXS", 19: "IQ1_S", 20: "IQ4_NL", 21: "IQ3_S",
    22: "IQ2_S", 23: "IQ4_XS", 24: "I8", 25: "I16", 26: "I32", 27: "I64", 28: "F64",
    29: "IQ1_M", 30: "BF16", 34: "TQ1_0", 35: "TQ2_0", 39: "MXFP4",
}  # fmt: skip

# Block-quantized types that mx.load turns into affine triplets: name -> bits. All use
# llama.cpp's 32-element blocks, i.e. MLX group size 32 along the input columns.
_QUANT_BITS = {"Q4_0": 4, "Q4_1": 4, "Q8_0": 8}
_GROUP_SIZE = 32
_FLOAT_TYPES = {"F32", "F16", "BF16"}
SUPPORTED_TENSOR_TYPES: frozenset[str] = frozenset(_FLOAT_TYPES | set(_QUANT_BITS))

SUPPORTED_ARCHITECTURES = ("llama",)

# GGUF metadata value types (gguf.md).
_SCALAR_FORMATS = {
    0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?",
    10: "<Q", 11: "<q", 12: "<d",
}  # fmt: skip
_FLOAT32_VALUE = 6
_STRING_VALUE = 8
_ARRAY_VALUE = 9

# GGUF tensor names (llama.cpp's `tensor_mapping.py`) -> mlx-lm llama module paths.
_GLOBAL_NAMES = {
    "token_embd": "model.embed_tokens",
    "output_norm": "model.norm",
    "output": "lm_head",
}
_BLOCK_NAMES = {
    "attn_q": "self_attn.q_proj",
    "attn_k": "self_attn.k_proj",
    "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj",
    "ffn_gate": "mlp.gate_proj",
    "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj",
    "attn_norm": "input_layernorm",
    "ffn_norm": "post_attention_layernorm",
}
_BLOCK_RE = re.compile(r"blk\.(\d+)\.([a-z_]+)$")

# tokenizer.ggml.token_type values (llama.cpp's llama_token_type).
_TOKEN_UNKNOWN, _TOKEN_CONTROL, _TOKEN_USER_DEFINED = 2, 3, 4

# Pre-tokenizer regexes as in the Hugging Face tokenizer.json files that llama.cpp's
# `tokenizer.ggml.pre` names stand for (llama-vocab.cpp groups them the same way).
_LLAMA3_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
_GPT2_PRE = {"default", "gpt2"}
_DIGITS_PRE = {"smollm", "starcoder", "refact"}  # Digits(individual) + ByteLevel
_LLAMA3_PRE = {"llama3", "llama-v3", "llama-bpe"}

_MAX_SHARD_BYTES = 5 << 30  # mlx-lm's own shard size


@dataclass(frozen=True)
class GGUFTensorInfo:
    """One tensor as the GGUF header describes it (shape in row-major/NumPy order)."""

    name: str
    shape: tuple[int, ...]
    type_name: str
    offset: int  # from the start of the data section

    @property
    def num_elements(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64))


@dataclass(frozen=True)
class GGUFHeader:
    """A GGUF file's metadata and tensor table, read without touching the tensor data."""

    version: int
    metadata: dict[str, Any]
    tensors: list[GGUFTensorInfo]
    data_offset: int  # absolute file offset of the (aligned) tensor data section


def _read_exact(f: BinaryIO, n: int) -> bytes:
    # Lengths come from the file: one larger than what is left is corruption, not a reason
    # to allocate gigabytes.
    left = os.fstat(f.fileno()).st_size - f.tell()
    if n > left:
        raise GGUFError("The GGUF header is corrupt or truncated (a length points past its end).")
    data = f.read(n)
    if len(data) != n:
        raise GGUFError("The GGUF file ends in the middle of its header (truncated file?).")
    return data


def _read_struct(f: BinaryIO, fmt: str) -> Any:
    return struct.unpack(fmt, _read_exact(f, struct.calcsize(fmt)))[0]


def _read_string(f: BinaryIO) -> str:
    return _read_exact(f, _read_struct(f, "<Q")).decode("utf-8", errors="replace")


def _read_value(f: BinaryIO, vtype: int) -> Any:
    if vtype == _STRING_VALUE:
        return _read_string(f)
    if vtype == _ARRAY_VALUE:
        etype, count = _read_struct(f, "<I"), _read_struct(f, "<Q")
        if etype in _SCALAR_FORMATS:
            # One bulk read instead of `count` small ones: token_type arrays have ~100k
            # entries.
            fmt = _SCALAR_FORMATS[etype]
            size = struct.calcsize(fmt)
            return list(struct.unpack(f"<{count}{fmt[1]}", _read_exact(f, size * count)))
        if count > os.fstat(f.fileno()).st_size - f.tell():  # each item takes a byte at least
            raise GGUFError("The GGUF header is corrupt (an array longer than the file).")
        return [_read_value(f, etype) for _ in range(count)]
    if vtype in _SCALAR_FORMATS:
        value = _read_struct(f, _SCALAR_FORMATS[vtype])
        if vtype == _FLOAT32_VALUE:
            # Shortest decimal that round-trips the float32 (1e-05, not 9.99999974e-06),
            # so config.json shows what the model's authors wrote.
            value = float(str(np.float32(value)))
        return value
    raise GGUFError(f"The GGUF header has a metadata value of unknown type {vtype}.")


def read_gguf_header(path: Path) -> GGUFHeader:
    """Read a GGUF file's metadata and tensor table (names, shapes, types) in pure Python.

    Cheap next to loading the weights, and the only reliable way to learn the tensor types:
    mx.load quietly converts some unsupported types to float16.
    """
    with open(path, "rb") as f:
        if f.read(4) != b"GGUF":
            raise GGUFError(f"{path} is not a GGUF file (no GGUF magic number).")
        version = _read_struct(f, "<I")
        if version not in (2, 3):
            raise GGUFError(
                f"GGUF version {version} is not supported (only versions 2 and 3, little-endian)."
            )
        n_tensors, n_kv = _read_struct(f, "<Q"), _read_struct(f, "<Q")
        metadata: dict[str, Any] = {}
        for _ in range(n_kv):
            key = _read_string(f)
            metadata[key] = _read_value(f, _read_struct(f, "<I"))
        tensors = []
        for _ in range(n_tensors):
            name = _read_string(f)
            n_dims = _read_struct(f, "<I")
            # ggml lists dimensions innermost first; NumPy/MLX order is the reverse.
            dims = [_read_struct(f, "<Q") for _ in range(n_dims)]
            ggml_type, offset = _read_struct(f, "<I"), _read_struct(f, "<Q")
            type_name = GGML_TYPE_NAMES.get(ggml_type, f"type {ggml_type}")
            tensors.append(GGUFTensorInfo(name, tuple(reversed(dims)), type_name, offset))
        alignment = int(metadata.get("general.alignment", 32))
        data_offset = -(-f.tell() // alignment) * alignment
    return GGUFHeader(version, metadata, tensors, data_offset)


def _join_names(names: list[str], limit: int = 6) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


def _check_supported(header: GGUFHeader) -> str:
    """Refuse what cannot be imported faithfully, before anything is loaded or written."""
    md = header.metadata
    arch = md.get("general.architecture")
    if arch not in SUPPORTED_ARCHITECTURES:
        raise GGUFError(
            f"GGUF architecture {arch!r} is not supported "
            f"(supported: {', '.join(SUPPORTED_ARCHITECTURES)})."
        )
    bad_types = sorted({t.type_name for t in header.tensors} - SUPPORTED_TENSOR_TYPES)
    if bad_types:
        raise GGUFError(
            f"GGUF tensor type{'s' if len(bad_types) > 1 else ''} {', '.join(bad_types)} "
            f"{'are' if len(bad_types) > 1 else 'is'} not supported "
            f"(supported: {', '.join(sorted(SUPPORTED_TENSOR_TYPES))})."
        )
    if int(md.get(f"{arch}.expert_count", 0) or 0) > 0:
        raise GGUFError(
            f"GGUF mixture-of-experts {arch} models ({arch}.expert_count="
            f"{md[f'{arch}.expert_count']}) are not supported."
        )
    model = md.get("tokenizer.ggml.model")
    if model != "gpt2":
        raise GGUFError(
            f"GGUF tokenizer model {model!r} is not supported (only 'gpt2', byte-level BPE)."
        )
    if not md.get("tokenizer.ggml.tokens") or not md.get("tokenizer.ggml.merges"):
        raise GGUFError("GGUF file has no tokenizer vocabulary (tokenizer.ggml.tokens/merges).")
    pre = md.get("tokenizer.ggml.pre", "default")
    if pre not in _GPT2_PRE | _DIGITS_PRE | _LLAMA3_PRE:
        raise GGUFError(f"GGUF pre-tokenizer {pre!r} is not supported.")
    return str(arch)


def _hf_name(gguf_name: str) -> str:
    """`blk.3.attn_q` -> `model.layers.3.self_attn.q_proj`; GGUFError for unknown names."""
    if gguf_name in _GLOBAL_NAMES:
        return _GLOBAL_NAMES[gguf_name]
    m = _BLOCK_RE.match(gguf_name)
    if m and m.group(2) in _BLOCK_NAMES:
        return f"model.layers.{m.group(1)}.{_BLOCK_NAMES[m.group(2)]}"
    raise KeyError(gguf_name)


def _int_md(md: dict[str, Any], key: str, default: int | None = None) -> int:
    value = md.get(key, default)
    if value is None:
        raise GGUFError(f"GGUF metadata lacks {key}, which a llama model needs.")
    if isinstance(value, list):
        raise GGUFError(f"GGUF metadata {key} varies per layer, which is not supported.")
    return int(value)


def _token_text(md: dict[str, Any], key: str) -> str | None:
    tokens = md["tokenizer.ggml.tokens"]
    token_id = md.get(key)
    if token_id is None or not 0 <= int(token_id) < len(tokens):
        return None
    return str(tokens[int(token_id)])


def _build_config(
    header: GGUFHeader, arch: str, quantization: dict[str, Any] | None
) -> dict[str, Any]:
    md = header.metadata
    by_name = {t.name: t for t in header.tensors}
    p = f"{arch}."
    hidden = _int_md(md, p + "embedding_length")
    n_heads = _int_md(md, p + "attention.head_count")
    n_kv_heads = _int_md(md, p + "attention.head_count_kv", n_heads)
    head_dim = _int_md(md, p + "attention.key_length", hidden // n_heads)
    rope_dim = _int_md(md, p + "rope.dimension_count", head_dim)
    if rope_dim != head_dim:
        raise GGUFError(
            f"GGUF partial rotary embeddings ({p}rope.dimension_count={rope_dim} of head "
            f"size {head_dim}) are not supported."
        )
    rope_scaling = None
    scaling_type = md.get(p + "rope.scaling.type", "none")
    if scaling_type == "linear":
        rope_scaling = {"type": "linear", "factor": float(md[p + "rope.scaling.factor"])}
    elif scaling_type != "none":
        raise GGUFError(f"GGUF RoPE scaling type {scaling_type!r} is not supported.")

    # The tensors are the truth for sizes that metadata may omit (llama.vocab_size is
    # optional in GGUF).
    vocab_size = by_name["token_embd.weight"].shape[0]
    ffn_up = by_name.get("blk.0.ffn_up.weight")
    config: dict[str, Any] = {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "hidden_size": hidden,
        "intermediate_size": _int_md(
            md, p + "feed_forward_length", ffn_up.shape[0] if ffn_up else None
        ),
        "num_hidden_layers": _int_md(md, p + "block_count"),
        "num_attention_heads": n_heads,
        "num_key_value_heads": n_kv_heads,
        "head_dim": head_dim,
        "hidden_act": "silu",
        "rms_norm_eps": float(md.get(p + "attention.layer_norm_rms_epsilon", 1e-5)),
        "rope_theta": float(md.get(p + "rope.freq_base", 10000.0)),
        "max_position_embeddings": _int_md(md, p + "context_length", 2048),
        "vocab_size": vocab_size,
        "tie_word_embeddings": "output.weight" not in by_name,
        "attention_bias": "blk.0.attn_q.bias" in by_name,
        "mlp_bias": "blk.0.ffn_up.bias" in by_name,
        "torch_dtype": "float32",
    }
    if rope_scaling:
        config["rope_scaling"] = rope_scaling
    for key, name in (
        ("bos_token_id", "bos"),
        ("eos_token_id", "eos"),
        ("pad_token_id", "padding"),
    ):
        if (token_id := md.get(f"tokenizer.ggml.{name}_token_id")) is not None:
            config[key] = int(token_id)
    if quantization is not None:
        # mlx-lm reads `quantization`; `quantization_config` is what HF tools look for.
        config["quantization"] = quantization
        config["quantization_config"] = quantization
    return config


@dataclass(frozen=True)
class _ImportPlan:
    header: GGUFHeader
    arch: str
    tensors: list[tuple[GGUFTensorInfo, str]]  # GGUF tensor -> mlx-lm llama name
    quantization: dict[str, Any] | None
    config: dict[str, Any]


def _plan_import(gguf_path: Path, dequantize: bool) -> _ImportPlan:
    """Decide everything that can be refused from the header alone (pure Python, no mlx)."""
    header = read_gguf_header(gguf_path)
    arch = _check_supported(header)

    # Tensor names (rope_freqs, MoE experts, ... have no llama equivalent) and the config.
    plan: list[tuple[GGUFTensorInfo, str]] = []
    unknown = []
    for info in header.tensors:
        base, _, suffix = info.name.rpartition(".")
        quantized_bias = suffix == "bias" and info.type_name in _QUANT_BITS
        try:
            if suffix not in ("weight", "bias") or quantized_bias:
                raise KeyError(info.name)
            plan.append((info, f"{_hf_name(base)}.{suffix}"))
        except KeyError:
            unknown.append(info.name)
    if unknown:
        raise GGUFError(f"GGUF tensors {_join_names(unknown)} have no mlx-lm llama equivalent.")
    if not any(i.name == "token_embd.weight" for i in header.tensors):
        raise GGUFError("GGUF file has no token_embd.weight tensor.")

    quantization: dict[str, Any] | None = None
    layer_bits = {
        hf_name.rpartition(".")[0]: _QUANT_BITS[info.type_name]
        for info, hf_name in plan
        if info.type_name in _QUANT_BITS
    }
    if layer_bits and not dequantize:
        # The most common width is the default; the rest (typically an 8-bit Q8_0
        # embedding next to 4-bit linears) become per-layer entries, which mlx-lm's
        # load() hands to nn.quantize's class_predicate as they are. Layers without
        # scales (F16/F32 linears) stay unquantized on load.
        default_bits = Counter(layer_bits.values()).most_common(1)[0][0]
        quantization = {"group_size": _GROUP_SIZE, "bits": default_bits, "mode": "affine"}
        for module, bits in sorted(layer_bits.items()):
            if bits != default_bits:
                quantization[module] = {"group_size": _GROUP_SIZE, "bits": bits, "mode": "affine"}
    config = _build_config(header, arch, quantization)
    return _ImportPlan(header, arch, plan, quantization, config)


def check_gguf(gguf_path: Path, *, dequantize: bool = False) -> GGUFHeader:
    """Refuse a file `import_gguf` would refuse, from its header alone; returns the header.

    Pure Python and cheap (no mlx, no weights read): the CLI calls it before queueing an
    import. Raises GGUFError with a one-sentence message naming what is not supported
    (only tokenizer details are left for `import_gguf` itself to find).
    """
    return _plan_import(Path(gguf_path), dequantize).header
