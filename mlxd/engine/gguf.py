"""Import llama-family GGUF files (llama.cpp's format) as MLX model folders.

`import_gguf` turns one `.gguf` file into a folder that `mlx_lm.load` accepts:
`config.json`, `model*.safetensors`, `tokenizer.json`, `tokenizer_config.json` and
`mlxd_import.json` (where the folder came from).

What it rests on:

- `mx.load(path)` reads GGUF. Q4_0/Q4_1/Q8_0 tensors come back as MLX affine-quantized
  triplets (`.weight` packed uint32, `.scales`, `.biases`; group size 32), F32/F16 as plain
  arrays. Scales and biases come back as float16, which is the slow path on the CPU backend,
  so they are cast to float32 (exact: every float16 is a float32).
- For other tensor types mx.load is no guide: some (Q4_K, ...) it silently dequantizes to
  float16, BF16 it silently narrows to float16, others it rejects. So the types are read
  from the file's own header first (`read_gguf_header`, pure Python) and everything but
  F32/F16/BF16/Q4_0/Q4_1/Q8_0 is refused before any weight is loaded. BF16 tensors are read
  straight from the file (bfloat16 -> float32 is exact).
- llama.cpp's converter permutes the rows of q_proj/k_proj (each head's rotary halves are
  interleaved for its RoPE kernel); that is undone here so the folder holds Hugging Face's
  layout and runs with mlx-lm's default (non-traditional) RoPE.
"""

from __future__ import annotations

import json
import os
import re
import struct
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, cast

import numpy as np

from mlxd.modelfolder import file_sha256

__all__ = [
    "GGUFError",
    "GGUFHeader",
    "GGUFTensorInfo",
    "SUPPORTED_TENSOR_TYPES",
    "check_gguf",
    "import_gguf",
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


def _unpermute_rows(n_heads: int, rows: int) -> np.ndarray:
    """Row order that undoes llama.cpp's q/k permutation.

    convert_hf_to_gguf.py does, per projection,
        w.reshape(n_head, 2, head_dim // 2, ...).swapaxes(1, 2).reshape(w.shape)
    i.e. GGUF row h*hd + 2*i + j holds HF row h*hd + j*hd/2 + i (the two rotary halves
    interleaved). Taking the rows in the order computed here restores the HF layout. The
    permutation is over output rows only, so it applies unchanged to the packed weight,
    scales and biases of a quantized tensor (their groups run along the input columns).
    """
    if rows % (2 * n_heads):
        raise GGUFError(
            f"GGUF q/k projection with {rows} rows does not split into {n_heads} heads."
        )
    head_dim = rows // n_heads
    order = np.arange(rows).reshape(n_heads, head_dim // 2, 2).transpose(0, 2, 1)
    return order.reshape(-1)


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


def _build_tokenizer(md: dict[str, Any], context_length: int) -> tuple[Any, dict[str, Any]]:
    """A `tokenizers.Tokenizer` and tokenizer_config.json equivalent to the GGUF's vocab."""
    from tokenizers import (
        AddedToken,
        Regex,
        Tokenizer,
        decoders,
        models,
        pre_tokenizers,
        processors,
    )

    tokens: list[str] = [str(t) for t in md["tokenizer.ggml.tokens"]]
    vocab = {tok: i for i, tok in enumerate(tokens)}
    if len(vocab) != len(tokens):
        dupes = [t for t, n in Counter(tokens).items() if n > 1]
        raise GGUFError(f"GGUF vocabulary has duplicate tokens ({_join_names(dupes)}).")
    merges = []
    for merge in md.get("tokenizer.ggml.merges", []):
        # Split at the first space after the first character, like llama.cpp does, so a
        # merge whose left part starts with a space stays intact.
        cut = merge.find(" ", 1)
        if cut < 0:
            raise GGUFError(f"GGUF BPE merge {merge!r} is not two tokens.")
        merges.append((merge[:cut], merge[cut + 1 :]))

    pre = md.get("tokenizer.ggml.pre", "default")
    byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    if pre in _DIGITS_PRE:
        pre_tok = pre_tokenizers.Sequence(
            [pre_tokenizers.Digits(individual_digits=True), byte_level]
        )
    elif pre in _LLAMA3_PRE:
        pre_tok = pre_tokenizers.Sequence(
            [
                pre_tokenizers.Split(Regex(_LLAMA3_SPLIT), behavior="isolated"),
                pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
            ]
        )
    else:
        pre_tok = byte_level

    tokenizer = Tokenizer(models.BPE(vocab=vocab, merges=merges, ignore_merges=pre in _LLAMA3_PRE))
    tokenizer.pre_tokenizer = pre_tok
    tokenizer.decoder = decoders.ByteLevel()

    # Control/unknown tokens are special (never produced by BPE, skipped when decoding
    # with skip_special_tokens); user-defined ones are matched whole but are plain text.
    types = md.get("tokenizer.ggml.token_type") or [1] * len(tokens)
    if len(types) != len(tokens):
        raise GGUFError(f"GGUF tokenizer has {len(types)} token types for {len(tokens)} tokens.")
    added = []
    for tok, ttype in zip(tokens, types, strict=True):
        if ttype in (_TOKEN_CONTROL, _TOKEN_UNKNOWN, _TOKEN_USER_DEFINED):
            special = ttype != _TOKEN_USER_DEFINED
            added.append(AddedToken(tok, special=special, normalized=False))
    tokenizer.add_tokens(added)

    add_bos = bool(md.get("tokenizer.ggml.add_bos_token", False))
    add_eos = bool(md.get("tokenizer.ggml.add_eos_token", False))
    bos = _token_text(md, "tokenizer.ggml.bos_token_id")
    eos = _token_text(md, "tokenizer.ggml.eos_token_id")
    post: list[Any] = [processors.ByteLevel(trim_offsets=False)]
    if (add_bos and bos) or (add_eos and eos):
        single = " ".join(
            ([f"{bos}:0"] if add_bos and bos else [])
            + ["$A:0"]
            + ([f"{eos}:0"] if add_eos and eos else [])
        )
        pair = single + " " + single.replace("$A:0", "$B:1").replace(":0", ":1")
        special_ids = {t: vocab[t] for t in (bos, eos) if t}
        post.append(
            processors.TemplateProcessing(
                single=single, pair=pair, special_tokens=list(special_ids.items())
            )
        )
    tokenizer.post_processor = processors.Sequence(post)

    config: dict[str, Any] = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "model_max_length": context_length,
        "add_bos_token": add_bos,
        "add_eos_token": add_eos,
        "clean_up_tokenization_spaces": False,
    }
    for key, md_key in (
        ("bos_token", "bos"),
        ("eos_token", "eos"),
        ("unk_token", "unknown"),
        ("pad_token", "padding"),
    ):
        if (text := _token_text(md, f"tokenizer.ggml.{md_key}_token_id")) is not None:
            config[key] = text
    if template := md.get("tokenizer.chat_template"):
        config["chat_template"] = template
    return tokenizer, config


def _save_weights(out_dir: Path, weights: dict[str, Any]) -> None:
    """Save as (sharded) safetensors plus the index, as mlx-lm's own `save_model` does."""
    import mlx.core as mx

    shards: list[dict[str, Any]] = [{}]
    size = 0
    for name in sorted(weights):
        nbytes = weights[name].nbytes  # known from shape and dtype, without evaluating
        if shards[-1] and size + nbytes > _MAX_SHARD_BYTES:
            shards.append({})
            size = 0
        shards[-1][name] = weights[name]
        size += nbytes
    weight_map = {}
    total = 0
    for i, shard in enumerate(shards, start=1):
        fname = (
            "model.safetensors"
            if len(shards) == 1
            else f"model-{i:05d}-of-{len(shards):05d}.safetensors"
        )
        # Saving evaluates the lazy graph (casts, row permutations, dequantization) one
        # shard at a time, so a dequantized copy of the whole model is never in memory.
        mx.save_safetensors(str(out_dir / fname), shard, metadata={"format": "mlx"})
        for name, arr in shard.items():
            weight_map[name] = fname
            total += arr.nbytes
        shard.clear()
    index = {"metadata": {"total_size": total}, "weight_map": weight_map}
    (out_dir / "model.safetensors.index.json").write_text(json.dumps(index, indent=2) + "\n")


def _read_bf16(path: Path, header: GGUFHeader, info: GGUFTensorInfo) -> Any:
    """BF16 tensor -> exact float32 mx.array (mx.load would round it to float16)."""
    import mlx.core as mx

    raw = np.fromfile(
        path,
        dtype="<u2",
        count=info.num_elements,
        offset=header.data_offset + info.offset,
    )
    return mx.array((raw.astype(np.uint32) << 16).view(np.float32).reshape(info.shape))


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


def import_gguf(gguf_path: Path, out_dir: Path, *, dequantize: bool = False) -> dict[str, Any]:
    """Turn a llama-family GGUF file into an MLX model folder that `mlx_lm.load` accepts.

    Quantized GGUF tensors (Q4_0/Q4_1/Q8_0) stay quantized as MLX affine, group size 32,
    with float32 scales/biases; with `dequantize=True` they are dequantized exactly to
    float32. Float tensors (F32/F16/BF16) are written as float32. `out_dir` must be absent
    or empty; nothing is written when the file is refused.

    Returns (and writes to `out_dir/mlxd_import.json`) a record: `architecture`,
    `num_parameters` (logical weights, quantized ones counted unpacked), `quantization`
    (the config.json entry, or None), `source_sha256`, `gguf_name` (general.name), plus
    `source`, `dequantized` and `tensor_types` (GGUF type name -> count).

    Raises GGUFError (a ValueError) for architectures, tensor types, tokenizers or layouts
    that are not supported, with a one-sentence message naming them.
    """
    gguf_path, out_dir = Path(gguf_path), Path(out_dir)
    # Everything that can be refused is decided before the weights are loaded and before
    # anything is written: the header checks, the tensor names, the config, the tokenizer.
    planned = _plan_import(gguf_path, dequantize)
    header, arch, plan = planned.header, planned.arch, planned.tensors
    quantization, config = planned.quantization, planned.config
    md = header.metadata
    tokenizer, tokenizer_config = _build_tokenizer(md, config["max_position_embeddings"])

    if out_dir.exists() and any(out_dir.iterdir()):
        raise FileExistsError(f"{out_dir} exists and is not empty")

    import mlx.core as mx

    loaded = cast(dict[str, Any], mx.load(str(gguf_path)))
    weights: dict[str, Any] = {}
    for info, hf_name in plan:
        module = hf_name.rpartition(".")[0]
        rows = None
        if module.endswith("self_attn.q_proj"):
            rows = _unpermute_rows(config["num_attention_heads"], info.shape[0])
        elif module.endswith("self_attn.k_proj"):
            rows = _unpermute_rows(config["num_key_value_heads"], info.shape[0])
        idx = mx.array(rows) if rows is not None else None

        if info.type_name in _QUANT_BITS:
            w = loaded[info.name]
            s = loaded[f"{info.name[: -len('.weight')]}.scales"].astype(mx.float32)
            b = loaded[f"{info.name[: -len('.weight')]}.biases"].astype(mx.float32)
            if idx is not None:
                w, s, b = w[idx], s[idx], b[idx]
            if dequantize:
                bits = _QUANT_BITS[info.type_name]
                weights[hf_name] = mx.dequantize(w, s, b, group_size=_GROUP_SIZE, bits=bits)
            else:
                weights[hf_name] = w
                weights[f"{module}.scales"] = s
                weights[f"{module}.biases"] = b
        else:
            if info.type_name == "BF16":
                arr = _read_bf16(gguf_path, header, info)
            else:
                arr = loaded[info.name].astype(mx.float32)
            weights[hf_name] = arr[idx] if idx is not None else arr

    record = {
        "architecture": arch,
        "num_parameters": sum(i.num_elements for i in header.tensors),
        "quantization": quantization,
        "source": str(gguf_path.resolve()),
        "source_sha256": file_sha256(gguf_path),
        "gguf_name": md.get("general.name"),
        "dequantized": bool(dequantize),
        "tensor_types": dict(Counter(i.type_name for i in header.tensors)),
    }

    out_dir.mkdir(parents=True, exist_ok=True)
    _save_weights(out_dir, weights)
    del loaded, weights
    (out_dir / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    tokenizer.save(str(out_dir / "tokenizer.json"))
    (out_dir / "tokenizer_config.json").write_text(
        json.dumps(tokenizer_config, indent=2, ensure_ascii=False) + "\n"
    )
    (out_dir / "mlxd_import.json").write_text(json.dumps(record, indent=2) + "\n")
    return record
