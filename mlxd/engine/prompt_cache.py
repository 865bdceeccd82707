"""Prompt caches on disk: a prefilled KV cache saved with mlx-lm's save_prompt_cache.

The file's metadata says which tokens it holds and which model made it, so a later user
can continue it (and refuse it for another model).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from .types import PromptCacheInfo

PREFILL_STEP = 512


def make_cache_file(
    model_path: Path,
    text: str,
    out_file: Path,
    *,
    kv_bits: int | None = None,
    metadata: dict[str, str] | None = None,
    as_system: bool = False,
) -> PromptCacheInfo:
    """Prefill ``text`` and save the KV cache to ``out_file``.

    Plain text by default; ``as_system``: the text as a system message in the model's chat
    template, the start of every `mlxd chat` conversation with that system prompt.
    """
    import mlx.core as mx
    from mlx_lm import load
    from mlx_lm.models.cache import make_prompt_cache, save_prompt_cache

    model, tokenizer, config = load(str(model_path), return_config=True)
    if as_system:
        if tokenizer.chat_template is None:
            raise ValueError("the model has no chat template to put a system prompt in")
        tokens = list(tokenizer.apply_chat_template([{"role": "system", "content": text}]))
    else:
        tokens = list(tokenizer.encode(text))
    if not tokens:
        raise ValueError("the text to cache has no tokens")
    cache = make_prompt_cache(model)
    tic = time.perf_counter()
    ids = mx.array(tokens)
    for start in range(0, len(tokens), PREFILL_STEP):
        model(ids[None, start : start + PREFILL_STEP], cache=cache)
        mx.eval([c.state for c in cache])
    prefill_s = time.perf_counter() - tic
    group_size = None
    if kv_bits is not None:
        from .bench import _kv_group_size

        group_size = _kv_group_size(model, config)
        cache = [c.to_quantized(group_size=group_size, bits=kv_bits) for c in cache]
        mx.eval([c.state for c in cache])
    meta = dict(metadata or {})
    meta.update(
        {
            "mlxd_tokens": json.dumps(tokens),
            "mlxd_num_tokens": str(len(tokens)),
            "mlxd_kv_bits": "" if kv_bits is None else str(kv_bits),
            "mlxd_system": text if as_system else "",
        }
    )
    out_file.parent.mkdir(parents=True, exist_ok=True)
    save_prompt_cache(str(out_file), cache, meta)
    return PromptCacheInfo(
        num_tokens=len(tokens),
        size_bytes=out_file.stat().st_size,
        prefill_s=prefill_s,
        kv_bits=kv_bits,
        kv_group_size=group_size,
    )


def load_cache_file(path: Path) -> tuple[list[Any], dict[str, Any]]:
    """The cache and its metadata; ``tokens`` and ``num_tokens`` decoded."""
    from mlx_lm.models.cache import load_prompt_cache

    cache, meta = load_prompt_cache(str(path), return_metadata=True)
    out: dict[str, Any] = dict(meta)
    out["tokens"] = json.loads(meta.get("mlxd_tokens", "[]"))
    out["num_tokens"] = int(meta.get("mlxd_num_tokens") or len(out["tokens"]))
    out["system"] = meta.get("mlxd_system") or None
    return cache, out
