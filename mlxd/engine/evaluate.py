"""Task accuracy: multiple-choice log-likelihoods and greedy generations from a model.

The engine knows nothing of task files: it gets plain requests and returns plain answers; the
``eval`` job (mlxd/jobs/eval.py) builds the requests and judges them.

- A choice request is a context and its continuations (each choice with a leading space, as
  lm-eval-harness writes them). As lm-eval does, the continuation's tokens are those of
  ``context + continuation`` after the context's own tokens, and its log-likelihood is the sum
  of their log-probabilities given everything before. The context runs once; its KV cache is
  repeated over the choices, which then run together in one batch (right-padded: a causal
  model's real positions never see the padding). Models whose cache is not a plain KV cache
  run every (context + choice) sequence whole, batched.
- A generation request is a prompt (with the model's chat template when it has one),
  generated greedily by mlx-lm's ``batch_generate`` up to its own token limit.
"""

from __future__ import annotations

import gc
from collections.abc import Callable
from pathlib import Path

Progress = Callable[[float, str], None]


def load(path: Path, adapter_path: Path | None = None):
    """(model, tokenizer) of a model folder."""
    from mlx_lm import load as mlx_load

    adapter = str(adapter_path) if adapter_path else None
    model, tokenizer = mlx_load(str(path), adapter_path=adapter)
    return model, tokenizer


def release() -> None:
    import mlx.core as mx

    gc.collect()
    mx.clear_cache()


def has_chat_template(tokenizer) -> bool:
    return getattr(tokenizer, "chat_template", None) is not None


def score_choices(
    model, tokenizer, requests: list[tuple[str, list[str]]], progress: Progress | None = None
) -> list[list[tuple[float, bool]]]:
    """For each (context, continuations): each continuation's (log-likelihood, greedy) —
    greedy is True when every one of its tokens is the model's argmax (lm-eval's is_greedy)."""
    out = []
    for n, (context, continuations) in enumerate(requests):
        ctx, conts = _split_tokens(tokenizer, context, continuations)
        out.append(_score_one(model, ctx, conts))
        if progress:
            progress((n + 1) / len(requests), f"{n + 1}/{len(requests)} items")
    return out


def _split_tokens(tokenizer, context: str, continuations: list[str]):
    ctx = list(tokenizer.encode(context))
    conts = []
    for cont in continuations:
        whole = list(tokenizer.encode(context + cont))
        tail = whole[len(ctx) :]
        conts.append(tail or whole[-1:])  # a continuation that merged into the context
    if not ctx:
        raise ValueError("an empty context: nothing to condition the choices on")
    return ctx, conts


def _plain_kv(cache) -> bool:
    from mlx_lm.models.cache import KVCache

    return all(type(c) is KVCache for c in cache)


# Architectures whose forward pass is exactly body then output head (mlx-lm's llama, qwen2,
# qwen3): the context's logits are needed at its last position only, and the head (a 49k x
# 576 matrix for SmolLM2) over every position cost as much as half the body on the CPU.
_BODY_THEN_HEAD = ("llama", "qwen2", "qwen3")


def _last_logits(model, ids, cache):
    """The logits at the last position of ``ids`` (1 x vocab)."""
    if type(model).__module__.rsplit(".", 1)[-1] in _BODY_THEN_HEAD and hasattr(model, "model"):
        hidden = model.model(ids, cache)[:, -1:, :]
        if getattr(model.args, "tie_word_embeddings", False):
            return model.model.embed_tokens.as_linear(hidden)[:, -1, :]
        return model.lm_head(hidden)[:, -1, :]
    return model(ids, cache=cache)[:, -1, :]


def _score_one(model, ctx: list[int], conts: list[list[int]]) -> list[tuple[float, bool]]:
    import mlx.core as mx
    from mlx_lm.models.cache import make_prompt_cache

    cache = make_prompt_cache(model)
    if not _plain_kv(cache):
        return _score_whole(model, ctx, conts)
    # The context once: its last position predicts each continuation's first token.
    last = _last_logits(model, mx.array(ctx)[None], cache).astype(mx.float32)
    first = last - mx.logsumexp(last, axis=-1, keepdims=True)  # [1, vocab]
    width = max(len(c) for c in conts) - 1
    rest = None
    if width > 0:
        n = len(conts)
        for c in cache:
            keys, values = c.keys[..., : c.offset, :], c.values[..., : c.offset, :]
            c.keys, c.values = mx.repeat(keys, n, axis=0), mx.repeat(values, n, axis=0)
        rows = [c[:-1] + [0] * (width - (len(c) - 1)) for c in conts]
        logits = model(mx.array(rows), cache=cache).astype(mx.float32)
        rest = logits - mx.logsumexp(logits, axis=-1, keepdims=True)  # [n, width, vocab]
    out = []
    for i, cont in enumerate(conts):
        pieces = [first[0]] + (
            [rest[i, j] for j in range(len(cont) - 1)] if rest is not None else []
        )
        out.append(_sum_greedy(pieces, cont))
    return out


def _sum_greedy(logprobs: list, tokens: list[int]) -> tuple[float, bool]:
    import mlx.core as mx

    stacked = mx.stack(logprobs)  # [len(tokens), vocab]
    ids = mx.array(tokens)
    ll = mx.take_along_axis(stacked, ids[:, None], axis=-1).sum()
    greedy = mx.all(mx.argmax(stacked, axis=-1) == ids)
    mx.eval(ll, greedy)
    return float(ll.item()), bool(greedy.item())


def _score_whole(model, ctx: list[int], conts: list[list[int]]) -> list[tuple[float, bool]]:
    """Every (context + choice) sequence whole, in one right-padded batch."""
    import mlx.core as mx

    seqs = [ctx + c for c in conts]
    width = max(len(s) for s in seqs) - 1
    rows = [s[:-1] + [0] * (width - (len(s) - 1)) for s in seqs]
    logits = model(mx.array(rows)).astype(mx.float32)
    logprobs = logits - mx.logsumexp(logits, axis=-1, keepdims=True)
    out = []
    for i, cont in enumerate(conts):
        start = len(ctx) - 1
        pieces = [logprobs[i, start + j] for j in range(len(cont))]
        out.append(_sum_greedy(pieces, cont))
    return out


def generate(
    model,
    tokenizer,
    prompts: list[list[dict[str, str]] | str],
    max_tokens: list[int],
    *,
    batch_size: int = 8,
    progress: Progress | None = None,
) -> list[str]:
    """Greedy completions, in input order. A prompt is a text, or chat messages (applied
    through the model's chat template)."""
    from mlx_lm import batch_generate

    ids = []
    for p in prompts:
        if isinstance(p, list):
            ids.append(list(tokenizer.apply_chat_template(p, add_generation_prompt=True)))
        else:
            ids.append(list(tokenizer.encode(p)))
    texts: list[str] = []
    for start in range(0, len(ids), batch_size):
        chunk = ids[start : start + batch_size]
        response = batch_generate(
            model,
            tokenizer,
            chunk,
            max_tokens=max_tokens[start : start + batch_size],
            completion_batch_size=batch_size,
            prefill_batch_size=batch_size,
        )
        texts += list(response.texts)
        if progress:
            done = min(start + batch_size, len(ids))
            progress(done / len(ids), f"{done}/{len(ids)} items")
    return texts


def token_count(tokenizer, text: str) -> int:
    return len(tokenizer.encode(text, add_special_tokens=False))
