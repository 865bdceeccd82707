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
from collections import Counter
from pathlib import Path
from typing import Any, cast

import numpy as np

from mlxd.formats.gguf import (  # the header and the import plan: pure Python
    _DIGITS_PRE,
    _GROUP_SIZE,
    _LLAMA3_PRE,
    _LLAMA3_SPLIT,
    _MAX_SHARD_BYTES,
    _QUANT_BITS,
    _TOKEN_CONTROL,
    _TOKEN_UNKNOWN,
    _TOKEN_USER_DEFINED,
    GGUFError,
    GGUFHeader,
    GGUFTensorInfo,
    _join_names,
    _plan_import,
    _token_text,
)
from mlxd.formats.modelfolder import file_sha256


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


def _build_tokenizer(md: dict[str, Any], context_length: int) -> tuple[Any, dict[str, Any]]:
    """A `tokenizers.Tokenizer` and tokenizer_config.json equivalent to the GGUF's vocab."""
    from tokenizers import AddedToken, Tokenizer, decoders, models

    tokens: list[str] = [str(t) for t in md["tokenizer.ggml.tokens"]]
    vocab, merges = _vocab_and_merges(md, tokens)
    pre = md.get("tokenizer.ggml.pre", "default")
    tokenizer = Tokenizer(models.BPE(vocab=vocab, merges=merges, ignore_merges=pre in _LLAMA3_PRE))
    tokenizer.pre_tokenizer = _pre_tokenizer(pre)
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
    tokenizer.post_processor = _post_processor(md, vocab)
    return tokenizer, _tokenizer_config(md, context_length)


def _vocab_and_merges(md: dict[str, Any], tokens: list[str]):
    """The BPE vocabulary (token -> id) and merges (pairs) of the GGUF's tokenizer."""
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
    return vocab, merges


def _pre_tokenizer(pre: str):
    """The pre-tokenizer the GGUF's ``tokenizer.ggml.pre`` names."""
    from tokenizers import Regex, pre_tokenizers

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
    return pre_tok


def _post_processor(md: dict[str, Any], vocab: dict[str, int]):
    """Byte-level offsets, and BOS/EOS added around a sequence where the GGUF says so."""
    from tokenizers import processors

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
    return processors.Sequence(post)


def _tokenizer_config(md: dict[str, Any], context_length: int) -> dict[str, Any]:
    """tokenizer_config.json: the special tokens' texts and the chat template."""
    config: dict[str, Any] = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "model_max_length": context_length,
        "add_bos_token": bool(md.get("tokenizer.ggml.add_bos_token", False)),
        "add_eos_token": bool(md.get("tokenizer.ggml.add_eos_token", False)),
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
    return config


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


def _convert_weights(
    gguf_path: Path, header, plan, config: dict[str, Any], loaded: dict[str, Any], dequantize: bool
) -> dict[str, Any]:
    """The GGUF's tensors under Hugging Face names (lazy mx arrays): q/k rows back in HF
    order, quantized ones kept as MLX affine (or dequantized), floats as float32."""
    import mlx.core as mx

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

    return weights


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
    weights = _convert_weights(gguf_path, header, plan, config, loaded, dequantize)
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
