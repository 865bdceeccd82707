"""Fuse an adapter into its base model, then check that the fused model behaves like both.

mlx-lm has no fuse library function (its `fuse` is a script): load with `adapter_path`,
call `fuse()` on every module that has one (a quantized base is re-quantized unless
`dequantize`), save. The check then compares the fused model with base + adapter on a fixed
text: KL divergence and top-1 agreement of the next-token distributions, and the greedy
tokens of a fixed prompt. Fusing onto quantized bases has lost adapters silently in mlx-lm's
history; this is what catches it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

CHECK_TOKENS = 64  # of the fixed text, scored by both models
GREEDY_TOKENS = 16
GREEDY_PROMPT = "The quick brown fox"


@dataclass
class FuseCheck:
    """How the fused model compares with base + adapter (and how far the adapter moved base)."""

    tokens: int
    kl_mean: float  # mean KL(base+adapter || fused) per token, nats
    kl_max: float
    top1_agreement: float
    adapter_kl_mean: float  # mean KL(base+adapter || base): what the adapter changed
    greedy_match: bool
    greedy_tokens_adapter: list[int]
    greedy_tokens_fused: list[int]
    quantized: bool


def fuse_adapter(
    model_path: Path, adapter_path: Path, out_dir: Path, *, dequantize: bool = False
) -> dict[str, Any]:
    """Write base + adapter as one model folder at `out_dir`; returns what was fused."""
    from mlx.utils import tree_unflatten
    from mlx_lm.utils import dequantize_model, load, save

    model, tokenizer, config = load(
        str(model_path), adapter_path=str(adapter_path), return_config=True
    )
    fused = [
        (n, m.fuse(dequantize=dequantize)) for n, m in model.named_modules() if hasattr(m, "fuse")
    ]
    if fused:
        model.update_modules(tree_unflatten(fused))
    quantized = bool(config.get("quantization") or config.get("quantization_config"))
    if dequantize and quantized:
        model = dequantize_model(model)
        config.pop("quantization", None)
        config.pop("quantization_config", None)
        quantized = False
    save(Path(out_dir), str(model_path), model, tokenizer, config, donate_model=False)
    return {"fused_layers": len(fused), "quantized": quantized, "dequantized": dequantize}


def check_fused(model_path: Path, adapter_path: Path, fused_path: Path, text: str) -> FuseCheck:
    """Compare the fused model with base + adapter (and base alone) on `text`."""
    import mlx.core as mx
    import numpy as np
    from mlx_lm import load

    with_adapter, tokenizer = load(str(model_path), adapter_path=str(adapter_path))
    fused, _ = load(str(fused_path))
    base, _ = load(str(model_path))
    ids = tokenizer.encode(text)[: CHECK_TOKENS + 1]
    if len(ids) < 2:
        raise ValueError("the check text is too short for the tokenizer")
    inputs = mx.array(ids)[None]

    def logprobs(model):
        logits = model(inputs)[0].astype(mx.float32)
        return logits - mx.logsumexp(logits, axis=-1, keepdims=True)

    ref = logprobs(with_adapter)
    out = logprobs(fused)
    plain = logprobs(base)
    kl = (mx.exp(ref) * (ref - out)).sum(axis=-1)
    kl_base = (mx.exp(ref) * (ref - plain)).sum(axis=-1)
    agree = (ref.argmax(axis=-1) == out.argmax(axis=-1)).astype(mx.float32)
    mx.eval(kl, kl_base, agree)
    kl_np = np.maximum(np.array(kl), 0.0)

    greedy_a = _greedy(with_adapter, tokenizer, GREEDY_PROMPT, GREEDY_TOKENS)
    greedy_f = _greedy(fused, tokenizer, GREEDY_PROMPT, GREEDY_TOKENS)
    quantized = any(type(m).__name__.startswith("Quantized") for _, m in fused.named_modules())
    return FuseCheck(
        tokens=int(inputs.shape[1]),
        kl_mean=float(kl_np.mean()),
        kl_max=float(kl_np.max()),
        top1_agreement=float(np.array(agree).mean()),
        adapter_kl_mean=float(np.maximum(np.array(kl_base), 0.0).mean()),
        greedy_match=greedy_a == greedy_f,
        greedy_tokens_adapter=greedy_a,
        greedy_tokens_fused=greedy_f,
        quantized=quantized,
    )


def _greedy(model, tokenizer, prompt: str, n: int) -> list[int]:
    """The first `n` greedy tokens after `prompt` (mlx-lm's own step loop, with its cache)."""
    import mlx.core as mx
    from mlx_lm.generate import generate_step

    steps = generate_step(mx.array(tokenizer.encode(prompt)), model, max_tokens=n)
    return [int(token) for token, _ in steps]
