"""Streaming text generation from a model folder (optionally a draft model and a prompt cache)."""

from __future__ import annotations

import time
from collections.abc import Generator, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

from mlxd.vocab.sampling import Sampling

from .types import GenerationStats


class GenerationStream(Iterator[str]):
    """Iterator over text pieces; `.stats` holds the final figures once iteration has ended.

    Nothing is loaded until the first next(): creating one is cheap.
    """

    def __init__(
        self,
        path: Path,
        prompt: str,
        *,
        sampling: Sampling | None = None,
        raw: bool = False,
        adapter_path: Path | None = None,
        draft_path: Path | None = None,
        num_draft_tokens: int = 2,
        prompt_cache_path: Path | None = None,
    ) -> None:
        self.sampling = sampling or Sampling()
        if num_draft_tokens < 1:
            raise ValueError("num_draft_tokens must be at least 1.")
        self.stats = GenerationStats()
        self._pieces = self._run(
            Path(path), prompt, raw, adapter_path, draft_path, num_draft_tokens, prompt_cache_path
        )

    def __next__(self) -> str:
        return next(self._pieces)

    def close(self) -> None:
        """Stop early; the stats keep what was generated so far."""
        self._pieces.close()

    def _run(
        self,
        path: Path,
        prompt: str,
        raw: bool,
        adapter_path: Path | None,
        draft_path: Path | None,
        num_draft_tokens: int,
        prompt_cache_path: Path | None,
    ) -> Generator[str, None, None]:
        import mlx.core as mx
        from mlx_lm import load

        model, tokenizer = load(str(path), adapter_path=str(adapter_path) if adapter_path else None)
        draft_model = None
        if draft_path is not None:
            draft_model, draft_tokenizer = load(str(draft_path))
            check_same_vocabulary(tokenizer, draft_tokenizer)
        cache = None
        if prompt_cache_path is not None:
            from .prompt_cache import load_cache_file

            cache, meta = load_cache_file(Path(prompt_cache_path))
            self.stats.cached_tokens = int(meta.get("num_tokens", 0))
            # The cached text comes first; the prompt continues it as plain text.
            raw = True
            if draft_model is not None:
                raise ValueError("a prompt cache cannot be combined with a draft model")
        tokens = encode_prompt(tokenizer, prompt, raw=raw, continuing=cache is not None)
        mx.reset_peak_memory()
        for response in stream_responses(
            model,
            tokenizer,
            tokens,
            self.sampling,
            prompt_cache=cache,
            draft_model=draft_model,
            num_draft_tokens=num_draft_tokens,
            stats=self.stats,
        ):
            if response.text:
                yield response.text


def check_same_vocabulary(tokenizer: Any, draft_tokenizer: Any) -> None:
    """Speculative decoding compares token ids: both models must share one vocabulary."""
    if tokenizer.get_vocab() != draft_tokenizer.get_vocab():
        raise ValueError(
            "the draft model has another tokenizer; it must share the model's vocabulary"
        )


def encode_prompt(tokenizer: Any, prompt: str, *, raw: bool, continuing: bool = False) -> list[int]:
    """Token ids of a prompt: the chat template around it unless raw or the model has none.

    ``continuing``: the text follows tokens already in a cache (no BOS in the middle).
    """
    if not raw and tokenizer.chat_template is not None:
        return list(
            tokenizer.apply_chat_template(
                [{"role": "user", "content": prompt}], add_generation_prompt=True
            )
        )
    if continuing:
        return list(tokenizer.encode(prompt, add_special_tokens=False))
    bos = getattr(tokenizer, "bos_token", None)
    add_special = bos is None or not prompt.startswith(bos)
    return list(tokenizer.encode(prompt, add_special_tokens=add_special))


def stream_responses(
    model: Any,
    tokenizer: Any,
    tokens: list[int],
    sampling: Sampling,
    *,
    prompt_cache: list[Any] | None = None,
    draft_model: Any = None,
    num_draft_tokens: int = 2,
    stats: GenerationStats | None = None,
    stream: Any = None,
) -> Generator[Any, None, None]:
    """mlx-lm's stream_generate with our sampling settings, keeping `stats` up to date.

    Yields mlx-lm's GenerationResponse objects. ``stats`` gains time to first token and,
    with a draft model, how many tokens the draft proposed that the model accepted.
    """
    import mlx.core as mx
    from mlx_lm import stream_generate

    from .sampling import sampler_kwargs

    stats = stats if stats is not None else GenerationStats()
    kwargs: dict[str, Any] = sampler_kwargs(sampling)
    if prompt_cache is not None:
        kwargs["prompt_cache"] = prompt_cache
    if draft_model is not None:
        kwargs["num_draft_tokens"] = num_draft_tokens
    if stream is not None:
        kwargs["stream"] = stream
    stats.prompt_tokens = len(tokens)
    stats.generated_tokens = 0
    stats.draft_accepted_tokens = 0 if draft_model is not None else None
    stats.draft_proposed_tokens = 0 if draft_model is not None else None
    # Each speculative round: the draft proposes up to num_draft_tokens (fewer near the end),
    # the model keeps a prefix of them and adds one token of its own (from_draft False).
    new_round = True
    tic = time.perf_counter()
    for response in stream_generate(
        model,
        tokenizer,
        mx.array(tokens),
        max_tokens=sampling.max_tokens,
        draft_model=draft_model,
        **kwargs,
    ):
        if response.generation_tokens == 1 and not stats.ttft_s:
            stats.ttft_s = time.perf_counter() - tic
        stats.generated_tokens = response.generation_tokens
        stats.prompt_tps = float(response.prompt_tps)
        stats.generation_tps = float(response.generation_tps)
        stats.peak_memory_bytes = int(mx.get_peak_memory())
        stats.finish_reason = response.finish_reason
        if draft_model is not None:
            if new_round:
                left = sampling.max_tokens - response.generation_tokens + 1
                stats.draft_proposed_tokens += min(left, num_draft_tokens)
            stats.draft_accepted_tokens += bool(response.from_draft)
            new_round = not response.from_draft
        yield response
    stats.total_s = time.perf_counter() - tic


def generate_stream(
    path: Path,
    prompt: str,
    *,
    max_tokens: int | None = None,
    temp: float | None = None,
    top_p: float | None = None,
    seed: int | None = None,
    raw: bool = False,
    sampling: Sampling | None = None,
    **options: Any,
) -> GenerationStream:
    """Stream generated text; the chat template wraps the prompt unless raw or there is none.

    temp 0 is greedy (deterministic). After iteration, `.stats` is a GenerationStats.
    ``options``: adapter_path, draft_path, num_draft_tokens, prompt_cache_path.
    """
    sampling = sampling or Sampling()
    overrides = {"max_tokens": max_tokens, "temp": temp, "top_p": top_p, "seed": seed}
    sampling = replace(sampling, **{k: v for k, v in overrides.items() if v is not None})
    return GenerationStream(path, prompt, sampling=sampling, raw=raw, **options)
