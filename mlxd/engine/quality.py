"""Quality of a model on a fixed text: perplexity and, against a base model, how far it moved.

Every figure comes from the models' own next-token log-probabilities (float32 log_softmax of
the logits) over the same tokens, so no dataset package or model hub is needed.

How the work is done, and why:

- The text is tokenized with the model's tokenizer as-is (no chat template; a BOS token is
  there exactly when the tokenizer adds one), then cut to ``max_tokens`` and to the model's
  context length. Position i predicts token i + 1, so n tokens give n - 1 scored positions.
- The model reads the tokens in chunks of ``chunk_tokens`` with one prompt cache carried
  across chunks: every position sees the whole text before it, the result equals a single
  forward pass over the text, and the logits held at once are only chunk x vocab.
- Against a base model, one model is loaded at a time: the base runs first and its float32
  log-probabilities are kept (in memory, or in a temporary file when they would take more than
  ``SPILL_BYTES``), the base is dropped, then the model runs and is compared chunk by chunk.
  Peak memory is one model plus positions x vocab x 4 bytes of base log-probabilities.
"""

from __future__ import annotations

import gc
import hashlib
import tempfile
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from .types import QualityResult

# Base log-probabilities above this size go to a temporary file instead of memory.
SPILL_BYTES = 512 * 1024**2

Progress = Callable[[float, str], None]


def default_text() -> tuple[str, str]:
    """("default", the evaluation text that ships with mlxd)."""
    text = resources.files("mlxd").joinpath("data/quality.txt").read_text(encoding="utf-8")
    return "default", text


def evaluate_quality(
    model_path: Path,
    text: str,
    *,
    base_path: Path | None = None,
    adapter_path: Path | None = None,
    max_tokens: int | None = None,
    chunk_tokens: int = 512,
    on_progress: Progress | None = None,
) -> QualityResult:
    """Perplexity of the model at model_path on text, and with base_path its drift from it.

    With ``adapter_path`` the model is scored with that adapter applied (unfused); base_path
    may then be model_path itself: the adapter's drift from the model it was trained on.

    Raises ValueError when the text gives fewer than two tokens, or when base and model do not
    share a tokenizer (different token ids for the text, or a different vocabulary width).
    """
    if max_tokens is not None and max_tokens < 2:
        raise ValueError("max_tokens must be at least 2 (one scored position).")
    if chunk_tokens < 1:
        raise ValueError("chunk_tokens must be at least 1.")
    progress = on_progress or (lambda _fraction, _message: None)
    text_sha256 = hashlib.sha256(text.encode("utf-8")).hexdigest()

    ids = _tokenize(model_path, text, max_tokens)
    if base_path is not None:
        base_ids = _tokenize(base_path, text, max_tokens)
        if base_ids != ids:
            raise ValueError(
                f"{base_path} and {model_path} tokenize the text differently; "
                "a base must share the model's tokenizer."
            )

    with ExitStack() as stack:
        base_stats = None
        base_logprobs = None
        if base_path is not None:
            base_logprobs, base_stats, ids = _score_base(
                Path(base_path), ids, chunk_tokens, stack, progress
            )
        model_stats = _score_model(
            Path(model_path),
            ids,
            chunk_tokens,
            base_logprobs,
            progress,
            0.5 if base_path else 0,
            adapter_path=adapter_path,
        )
    progress(1.0, "done")

    positions = model_stats["positions"]
    result = QualityResult(
        tokens=positions,
        perplexity=float(np.exp(model_stats["nll_sum"] / positions)),
        base_perplexity=None,
        kl_mean=None,
        top1_agreement=None,
        max_abs_delta_logprob=None,
        text_sha256=text_sha256,
    )
    if base_stats is not None:
        result.base_perplexity = float(np.exp(base_stats["nll_sum"] / positions))
        result.kl_mean = max(model_stats["kl_sum"] / positions, 0.0)  # rounding can dip below 0
        result.top1_agreement = model_stats["agree"] / positions
        result.max_abs_delta_logprob = model_stats["max_delta"]
    return result


# -- internals ------------------------------------------------------------------------------


def _tokenize(path: Path, text: str, max_tokens: int | None) -> list[int]:
    from mlx_lm.utils import load_tokenizer

    tokenizer = load_tokenizer(Path(path))
    # encode() adds the tokenizer's own special tokens (a BOS where it uses one), nothing more.
    ids = list(tokenizer.encode(text))
    if max_tokens is not None:
        ids = ids[:max_tokens]
    if len(ids) < 2:
        raise ValueError("the text is too short: it needs at least two tokens to score one.")
    return ids


def _load(path: Path, adapter_path: Path | None = None):
    from mlx_lm import load

    adapter = str(adapter_path) if adapter_path else None
    model, _tokenizer, config = load(str(path), adapter_path=adapter, return_config=True)
    context = config.get("max_position_embeddings") or (config.get("text_config") or {}).get(
        "max_position_embeddings"
    )
    return model, context


def _chunks(model, ids: list[int], chunk_tokens: int) -> Iterator[tuple[int, int, Any]]:
    """(start, end, float32 log-probs of positions start..end-1) over ids[:-1], one cache."""
    import mlx.core as mx
    from mlx_lm.models.cache import make_prompt_cache

    cache = make_prompt_cache(model)
    inputs = mx.array(ids[:-1])
    for start in range(0, len(ids) - 1, chunk_tokens):
        end = min(start + chunk_tokens, len(ids) - 1)
        logits = model(inputs[None, start:end], cache=cache)[0].astype(mx.float32)
        logprobs = logits - mx.logsumexp(logits, axis=-1, keepdims=True)
        yield start, end, logprobs


def _fit_context(ids: list[int], context: int | None) -> list[int]:
    # Positions past the trained context would score the model on something it never learned.
    return ids[:context] if context and len(ids) > context else ids


def _score_base(
    path: Path, ids: list[int], chunk_tokens: int, stack: ExitStack, progress: Progress
) -> tuple[np.ndarray, dict[str, float], list[int]]:
    """Run the base once: its NLL sum and every position's log-probs (kept for the model)."""
    import mlx.core as mx

    progress(0.0, f"loading base {path.name}")
    model, context = _load(path)
    ids = _fit_context(ids, context)
    positions = len(ids) - 1
    nll_sum = 0.0
    store: np.ndarray | None = None
    targets = mx.array(ids[1:])
    for start, end, logprobs in _chunks(model, ids, chunk_tokens):
        if store is None:
            store = _logprob_store(positions, logprobs.shape[-1], stack)
        nll = -mx.take_along_axis(logprobs, targets[start:end, None], axis=-1)
        nll_sum += float(nll.sum().item())
        store[start:end] = np.asarray(logprobs)
        progress(0.5 * end / positions, f"base {path.name}: {end}/{positions} tokens")
    del model
    gc.collect()
    mx.clear_cache()
    assert store is not None
    return store, {"nll_sum": nll_sum}, ids


def _logprob_store(positions: int, vocab: int, stack: ExitStack) -> np.ndarray:
    if positions * vocab * 4 <= SPILL_BYTES:
        return np.empty((positions, vocab), dtype=np.float32)
    folder = stack.enter_context(tempfile.TemporaryDirectory(prefix="mlxd-quality-"))
    return np.lib.format.open_memmap(
        Path(folder) / "base_logprobs.npy", mode="w+", dtype=np.float32, shape=(positions, vocab)
    )


def _score_model(
    path: Path,
    ids: list[int],
    chunk_tokens: int,
    base_logprobs: np.ndarray | None,
    progress: Progress,
    offset: float,
    *,
    adapter_path: Path | None = None,
) -> dict[str, float]:
    import mlx.core as mx

    progress(offset, f"loading {path.name}" + (f" + {adapter_path.name}" if adapter_path else ""))
    model, context = _load(path, adapter_path)
    if base_logprobs is None:
        ids = _fit_context(ids, context)
    elif context and len(ids) > context:
        raise ValueError(
            f"the base reads {len(ids)} tokens but {path.name} only {context}; "
            "pass a smaller max_tokens."
        )
    positions = len(ids) - 1
    targets = mx.array(ids[1:])
    stats = {"positions": positions, "nll_sum": 0.0, "kl_sum": 0.0, "agree": 0, "max_delta": 0.0}
    for start, end, logprobs in _chunks(model, ids, chunk_tokens):
        tgt = targets[start:end, None]
        own = mx.take_along_axis(logprobs, tgt, axis=-1)[:, 0]
        stats["nll_sum"] -= float(own.sum().item())
        if base_logprobs is not None:
            if logprobs.shape[-1] != base_logprobs.shape[-1]:
                raise ValueError(
                    f"{path.name} has {logprobs.shape[-1]} logits per token but the base "
                    f"{base_logprobs.shape[-1]}; a base must share the model's vocabulary."
                )
            base = mx.array(base_logprobs[start:end])
            p_base = mx.exp(base)
            # Where the base gives a token no probability it adds nothing (avoids 0 * inf).
            kl = mx.where(p_base > 0, p_base * (base - logprobs), 0.0).sum(axis=-1)
            agree = mx.argmax(base, axis=-1) == mx.argmax(logprobs, axis=-1)
            delta = mx.abs(own - mx.take_along_axis(base, tgt, axis=-1)[:, 0])
            sums = (kl.sum(), agree.sum(), delta.max())
            mx.eval(*sums)  # one evaluation of the chunk's graph for all three
            stats["kl_sum"] += float(sums[0].item())
            stats["agree"] += int(sums[1].item())
            stats["max_delta"] = max(stats["max_delta"], float(sums[2].item()))
        progress(offset + (1 - offset) * end / positions, f"{path.name}: {end}/{positions} tokens")
    del model
    gc.collect()
    mx.clear_cache()
    return stats
