"""Many prompts through mlx-lm's BatchGenerator (continuous batching), results in input order."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from mlxd.jobs.sampling import Sampling

from .types import BatchItemResult, BatchRunResult


def encode_batch_prompt(tokenizer: Any, item: Any, *, raw: bool, continuing: bool) -> list[int]:
    """A prompt line (text or a messages list) as token ids, like `mlxd generate` would."""
    from .generate import encode_prompt

    if isinstance(item, list):  # messages
        if tokenizer.chat_template is not None and not raw:
            return list(tokenizer.apply_chat_template(item, add_generation_prompt=True))
        item = "\n".join(f"{m['role']}: {m['content']}" for m in item) + "\nassistant:"
    return encode_prompt(tokenizer, item, raw=raw, continuing=continuing)


def run_batch(
    path: Path,
    prompts: list[Any],
    *,
    max_tokens: list[int],
    sampling: Sampling,
    batch_size: int = 8,
    raw: bool = False,
    prompt_cache_path: Path | None = None,
    warmup: bool = True,
    on_done: Callable[[int, int], None] | None = None,
) -> BatchRunResult:
    """Generate for every prompt (a text, or a list of {role, content} messages).

    ``batch_size`` sequences decode together; the rest wait and join as others finish.
    Throughput figures are over the whole batch (mlx-lm's BatchGenerator counters); each
    item's tok/s runs from its first token to its last.
    """
    import mlx.core as mx
    from mlx.utils import tree_flatten
    from mlx_lm import load
    from mlx_lm.generate import BatchGenerator

    from .sampling import sampler_kwargs

    if len(max_tokens) != len(prompts):
        raise ValueError("max_tokens needs one value per prompt.")
    if batch_size < 1:
        raise ValueError("batch_size must be at least 1.")
    tic = time.perf_counter()
    model, tokenizer = load(str(path))
    load_time_s = time.perf_counter() - tic
    continuing = prompt_cache_path is not None
    ids = [
        encode_batch_prompt(tokenizer, p, raw=raw or continuing, continuing=continuing)
        for p in prompts
    ]
    caches = None
    if prompt_cache_path is not None:
        from .prompt_cache import load_cache_file

        # Every sequence continues its own copy of the cached prefix.
        caches = [load_cache_file(prompt_cache_path)[0] for _ in prompts]
    sampling_kw = sampler_kwargs(sampling)

    def generator() -> Any:
        return BatchGenerator(
            model,
            max_tokens=max(max_tokens),
            stop_tokens=[[t] for t in tokenizer.eos_token_ids],
            completion_batch_size=batch_size,
            prefill_batch_size=min(batch_size, 8),
            **sampling_kw,
        )

    if warmup:  # the first generation in a process is several times slower
        _warm_up(generator(), ids[0])

    mx.reset_peak_memory()
    gen = generator()
    uids = gen.insert(ids, max_tokens, caches=caches)
    seqs = _Sequences(len(prompts), {uid: i for i, uid in enumerate(uids)}, on_done)
    with gen.stats() as stats:
        while responses := gen.next_generated():
            seqs.take(responses, time.perf_counter())
    wall_s = time.perf_counter() - seqs.start
    gen.close()
    return BatchRunResult(
        items=seqs.items(tokenizer, ids),
        batch_size=batch_size,
        prompt_tokens=int(stats.prompt_tokens),
        generation_tokens=int(stats.generation_tokens),
        prompt_tps=float(stats.prompt_tps),
        generation_tps=float(stats.generation_tps),
        wall_s=wall_s,
        peak_memory_bytes=int(mx.get_peak_memory()),
        load_time_s=load_time_s,
        model_memory_bytes=int(sum(v.nbytes for _, v in tree_flatten(model.parameters()))),
        cached_tokens=_cached_tokens(prompt_cache_path),
    )


def _warm_up(gen, ids: list[int]) -> None:
    """Two tokens after a short prompt, unmeasured."""
    gen.insert([ids[:8]], [2])
    while gen.next_generated():
        pass
    gen.close()


class _Sequences:
    """What the generator gave each sequence so far, and when (its first and last token)."""

    def __init__(self, n: int, index: dict[int, int], on_done):
        self.n, self.index, self.on_done = n, index, on_done
        self.tokens: list[list[int]] = [[] for _ in range(n)]
        self.first: list[float | None] = [None] * n
        self.last: list[float] = [0.0] * n
        self.finish: list[str | None] = [None] * n
        self.done = 0
        self.start = time.perf_counter()

    def take(self, responses, now: float) -> None:
        for r in responses:
            i = self.index[r.uid]
            if self.first[i] is None:
                self.first[i] = now
            if r.finish_reason != "stop":
                self.tokens[i].append(int(r.token))
            self.last[i] = now
            if r.finish_reason is not None:
                self.finish[i] = r.finish_reason
                self.done += 1
                if self.on_done is not None:
                    self.on_done(self.done, self.n)

    def items(self, tokenizer: Any, ids: list[list[int]]) -> list[BatchItemResult]:
        """Each sequence's result, in input order; its tok/s from its first token to its last."""
        items = []
        for i, toks in enumerate(self.tokens):
            first = self.first[i]
            span = self.last[i] - first if first is not None else 0.0
            items.append(
                BatchItemResult(
                    index=i,
                    text=_detokenize(tokenizer, toks),
                    token_ids=toks,
                    prompt_tokens=len(ids[i]),
                    generated_tokens=len(toks),
                    tokens_per_s=(len(toks) - 1) / span if len(toks) > 1 and span > 0 else None,
                    ttft_s=(first - self.start) if first is not None else None,
                    finish_reason=self.finish[i],
                )
            )
        return items


def _detokenize(tokenizer: Any, tokens: list[int]) -> str:
    """Text as `mlxd generate` streams it (mlx-lm's streaming detokenizer, not decode())."""
    detok = tokenizer.detokenizer
    detok.reset()
    for t in tokens:
        detok.add_token(t)
    detok.finalize()
    return detok.text


def _cached_tokens(path: Path | None) -> int | None:
    if path is None:
        return None
    from .prompt_cache import load_cache_file

    return int(load_cache_file(path)[1]["num_tokens"])
