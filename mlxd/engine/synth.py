"""Synthetic random-weight models in Hugging Face layout, built offline and deterministically.

The folder holds a real architecture's config.json (llama or qwen2), random weights under the
HF tensor names, and a byte-level BPE tokenizer trained on mlxd/data/corpus.txt, so
`mlx_lm.load` treats it like any downloaded checkpoint. Output text is meaningless.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from mlxd.vocab.choices import DTYPES

CORPUS_PATH = Path(__file__).resolve().parent.parent / "data" / "corpus.txt"

ARCHS = ("llama", "qwen2")

# Every quantized input dimension (hidden_size, intermediate_size, heads * head_dim) is a
# multiple of 128, so affine groups 32/64/128, mxfp4/mxfp8 (32) and nvfp4 (16) all apply.
SIZES: dict[str, dict[str, int]] = {
    "tiny": {  # ~0.9M parameters
        "hidden_size": 128,
        "num_hidden_layers": 4,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "intermediate_size": 384,
        "vocab_size": 1024,
    },
    "small": {  # ~9.4M parameters
        "hidden_size": 384,
        "num_hidden_layers": 5,
        "num_attention_heads": 6,
        "num_key_value_heads": 2,
        "intermediate_size": 1024,
        "vocab_size": 4096,
    },
    "base": {  # ~96M parameters
        "hidden_size": 768,
        "num_hidden_layers": 12,
        "num_attention_heads": 12,
        "num_key_value_heads": 4,
        "intermediate_size": 2560,
        "vocab_size": 8192,
    },
}

# Shape keys copied from a real config.json by `like=`.
_LIKE_KEYS = (
    "hidden_size",
    "num_hidden_layers",
    "num_attention_heads",
    "num_key_value_heads",
    "intermediate_size",
    "vocab_size",
    "head_dim",
    "rms_norm_eps",
    "rope_theta",
    "rope_scaling",
    "max_position_embeddings",
    "tie_word_embeddings",
    "attention_bias",
    "mlp_bias",
)

BOS_TOKEN = "<|endoftext|>"
IM_START = "<|im_start|>"
EOS_TOKEN = "<|im_end|>"
PAD_TOKEN = "<|pad|>"
# Trainer order fixes the ids: bos=0, im_start=1, eos=2, pad=3.
SPECIAL_TOKENS = (BOS_TOKEN, IM_START, EOS_TOKEN, PAD_TOKEN)

CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)

# Same spread HF uses to initialise these architectures: small enough that activations and
# logits stay tame through the layers of a random model.
INIT_STD = 0.02
# 256 byte symbols + the special tokens is the smallest byte-level BPE vocabulary.
MIN_VOCAB = 256 + len(SPECIAL_TOKENS)


def list_sizes() -> dict[str, dict[str, Any]]:
    """Size presets with their parameter counts (llama layout, tied embeddings)."""
    out: dict[str, dict[str, Any]] = {}
    for name, shape in SIZES.items():
        config = _make_config("llama", dict(shape), "float32")
        out[name] = {**shape, "num_parameters": _count(_tensor_shapes(config))}
    return out


def synth_model(
    out_dir: Path,
    *,
    arch: str = "llama",
    size: str = "tiny",
    seed: int = 0,
    like: Path | None = None,
    dtype: str = "float32",
) -> dict[str, Any]:
    """Write a random-weight HF model folder to out_dir (created; must be empty if it exists).

    With `like`, the shape (and architecture) comes from that config.json and `size` is ignored.
    Returns {"arch", "size", "seed", "dtype", "num_parameters", "vocab_size", "path"}.
    """
    out_dir = Path(out_dir)
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {', '.join(DTYPES)}, not {dtype!r}.")
    if like is not None:
        like_config = json.loads(Path(like).read_text())
        arch = like_config.get("model_type", "")
        if arch not in ARCHS:
            raise ValueError(
                f"like= config has model_type {arch!r}; only {', '.join(ARCHS)} can be synthesised."
            )
        shape = {k: like_config[k] for k in _LIKE_KEYS if like_config.get(k) is not None}
        if arch == "qwen2":
            # mlx-lm's qwen2 always derives head_dim from hidden_size / heads.
            shape.pop("head_dim", None)
        size = "like"
    else:
        if arch not in ARCHS:
            raise ValueError(f"arch must be one of {', '.join(ARCHS)}, not {arch!r}.")
        if size not in SIZES:
            raise ValueError(f"size must be one of {', '.join(SIZES)}, not {size!r}.")
        shape = dict(SIZES[size])
    if shape["vocab_size"] < MIN_VOCAB:
        raise ValueError(f"vocab_size must be at least {MIN_VOCAB} for a byte-level tokenizer.")

    if out_dir.exists() and any(out_dir.iterdir()):
        raise FileExistsError(f"{out_dir} is not empty.")
    out_dir.mkdir(parents=True, exist_ok=True)

    config = _make_config(arch, shape, dtype)
    shapes = _tensor_shapes(config)
    num_parameters = _count(shapes)
    trained_vocab = _write_tokenizer(
        out_dir, config["vocab_size"], config["max_position_embeddings"]
    )
    _write_weights(out_dir / "model.safetensors", shapes, seed, dtype)

    _write_json(out_dir / "config.json", config)
    _write_json(
        out_dir / "generation_config.json",
        {
            "bos_token_id": config["bos_token_id"],
            "eos_token_id": config["eos_token_id"],
            "pad_token_id": config["pad_token_id"],
            "do_sample": False,
        },
    )
    info = {
        "arch": arch,
        "size": size,
        "seed": seed,
        "dtype": dtype,
        "num_parameters": num_parameters,
        "vocab_size": config["vocab_size"],
    }
    _write_json(
        out_dir / "mlxd_synth.json",
        {
            **info,
            "synthetic": True,
            "note": "Synthetic model with random weights made by mlxd; its output is meaningless.",
            "like": str(like) if like is not None else None,
            "tokenizer_trained_vocab": trained_vocab,
        },
    )
    return {**info, "path": str(out_dir)}


def _make_config(arch: str, shape: dict[str, Any], dtype: str) -> dict[str, Any]:
    bos, eos, pad = (SPECIAL_TOKENS.index(t) for t in (BOS_TOKEN, EOS_TOKEN, PAD_TOKEN))
    config: dict[str, Any] = {
        "architectures": ["LlamaForCausalLM" if arch == "llama" else "Qwen2ForCausalLM"],
        "model_type": arch,
        "hidden_act": "silu",
        "initializer_range": INIT_STD,
        "rms_norm_eps": 1e-5 if arch == "llama" else 1e-6,
        "rope_theta": 10000.0 if arch == "llama" else 1000000.0,
        "rope_scaling": None,
        "max_position_embeddings": 2048,
        "tie_word_embeddings": True,
        "bos_token_id": bos,
        "eos_token_id": eos,
        "pad_token_id": pad,
        "torch_dtype": dtype,
        "use_cache": True,
    }
    if arch == "llama":
        config.update(attention_bias=False, mlp_bias=False)
    else:
        config.update(use_sliding_window=False, sliding_window=None, max_window_layers=0)
    config.update(shape)
    config.setdefault("num_key_value_heads", config["num_attention_heads"])
    return dict(sorted(config.items()))


def _tensor_shapes(config: dict[str, Any]) -> dict[str, tuple[int, ...]]:
    """HF tensor names and shapes, in a fixed order (the order random numbers are drawn in)."""
    h = config["hidden_size"]
    n_heads = config["num_attention_heads"]
    n_kv = config["num_key_value_heads"]
    head_dim = config.get("head_dim") or h // n_heads
    inter = config["intermediate_size"]
    vocab = config["vocab_size"]
    qkv_bias = config["model_type"] == "qwen2" or config.get("attention_bias", False)
    o_bias = config["model_type"] == "llama" and config.get("attention_bias", False)
    mlp_bias = config["model_type"] == "llama" and config.get("mlp_bias", False)

    shapes: dict[str, tuple[int, ...]] = {"model.embed_tokens.weight": (vocab, h)}
    for i in range(config["num_hidden_layers"]):
        p = f"model.layers.{i}."
        shapes[p + "input_layernorm.weight"] = (h,)
        shapes[p + "self_attn.q_proj.weight"] = (n_heads * head_dim, h)
        shapes[p + "self_attn.k_proj.weight"] = (n_kv * head_dim, h)
        shapes[p + "self_attn.v_proj.weight"] = (n_kv * head_dim, h)
        shapes[p + "self_attn.o_proj.weight"] = (h, n_heads * head_dim)
        if qkv_bias:
            shapes[p + "self_attn.q_proj.bias"] = (n_heads * head_dim,)
            shapes[p + "self_attn.k_proj.bias"] = (n_kv * head_dim,)
            shapes[p + "self_attn.v_proj.bias"] = (n_kv * head_dim,)
        if o_bias:
            shapes[p + "self_attn.o_proj.bias"] = (h,)
        shapes[p + "post_attention_layernorm.weight"] = (h,)
        shapes[p + "mlp.gate_proj.weight"] = (inter, h)
        shapes[p + "mlp.up_proj.weight"] = (inter, h)
        shapes[p + "mlp.down_proj.weight"] = (h, inter)
        if mlp_bias:
            shapes[p + "mlp.gate_proj.bias"] = (inter,)
            shapes[p + "mlp.up_proj.bias"] = (inter,)
            shapes[p + "mlp.down_proj.bias"] = (h,)
    shapes["model.norm.weight"] = (h,)
    if not config["tie_word_embeddings"]:
        shapes["lm_head.weight"] = (vocab, h)
    return shapes


def _count(shapes: dict[str, tuple[int, ...]]) -> int:
    return int(sum(np.prod(s) for s in shapes.values()))


def _write_weights(path: Path, shapes: dict[str, tuple[int, ...]], seed: int, dtype: str) -> None:
    import mlx.core as mx

    rng = np.random.default_rng(seed)
    target = getattr(mx, dtype)
    weights = {}
    for name, shape in shapes.items():
        if name.endswith("norm.weight"):
            value = np.ones(shape, dtype=np.float32)
        elif name.endswith(".bias"):
            value = np.zeros(shape, dtype=np.float32)
        else:
            value = rng.standard_normal(shape, dtype=np.float32) * np.float32(INIT_STD)
        weights[name] = mx.array(value).astype(target)
    # "format": "pt" is what HF writers put there; some loaders check for it.
    mx.save_safetensors(str(path), weights, metadata={"format": "pt"})


def _write_tokenizer(out_dir: Path, vocab_size: int, max_length: int) -> int:
    """Train a byte-level BPE of exactly vocab_size ids; returns how many were really learned.

    A small corpus runs out of merges before a large vocabulary is full: the rest is padded with
    unreachable filler entries so that tokenizer and embedding sizes agree.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train([str(CORPUS_PATH)], trainer)
    data = json.loads(tokenizer.to_str())
    vocab: dict[str, int] = data["model"]["vocab"]
    trained = len(vocab)
    for i in range(trained, vocab_size):
        vocab[f"<|filler_{i}|>"] = i

    (out_dir / "tokenizer.json").write_text(json.dumps(data, ensure_ascii=False))
    _write_json(
        out_dir / "tokenizer_config.json",
        {
            "tokenizer_class": "PreTrainedTokenizerFast",
            "bos_token": BOS_TOKEN,
            "eos_token": EOS_TOKEN,
            "pad_token": PAD_TOKEN,
            "unk_token": None,
            "add_bos_token": False,
            "clean_up_tokenization_spaces": False,
            "model_max_length": max_length,
            "chat_template": CHAT_TEMPLATE,
            "added_tokens_decoder": {
                str(i): {
                    "content": tok,
                    "lstrip": False,
                    "rstrip": False,
                    "normalized": False,
                    "single_word": False,
                    "special": True,
                }
                for i, tok in enumerate(SPECIAL_TOKENS)
            },
        },
    )
    _write_json(
        out_dir / "special_tokens_map.json",
        {"bos_token": BOS_TOKEN, "eos_token": EOS_TOKEN, "pad_token": PAD_TOKEN},
    )
    return trained


def _write_json(path: Path, data: dict[str, Any]) -> None:
    path.write_text(json.dumps(data, indent=2) + "\n")
