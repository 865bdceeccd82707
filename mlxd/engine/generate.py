"""Streaming text generation from a model folder."""

from __future__ import annotations

from collections.abc import Generator, Iterator
from pathlib import Path
from typing import Any

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
        max_tokens: int = 256,
        temp: float = 0.0,
        top_p: float = 1.0,
        seed: int | None = None,
        raw: bool = False,
        adapter_path: Path | None = None,
    ) -> None:
        if max_tokens < 1:
            raise ValueError("max_tokens must be at least 1.")
        if temp < 0 or not 0 < top_p <= 1:
            raise ValueError("temp must be at least 0 and top_p in (0, 1].")
        self.stats = GenerationStats()
        self._adapter = adapter_path
        self._pieces = self._run(Path(path), prompt, max_tokens, temp, top_p, seed, raw)

    def __next__(self) -> str:
        return next(self._pieces)

    def close(self) -> None:
        """Stop early; the stats keep what was generated so far."""
        self._pieces.close()

    def _run(
        self,
        path: Path,
        prompt: str,
        max_tokens: int,
        temp: float,
        top_p: float,
        seed: int | None,
        raw: bool,
    ) -> Generator[str, None, None]:
        import mlx.core as mx
        from mlx_lm import load, stream_generate
        from mlx_lm.sample_utils import make_sampler

        model, tokenizer = load(
            str(path), adapter_path=str(self._adapter) if self._adapter else None
        )
        if seed is not None:
            mx.random.seed(seed)
        tokens: Any = prompt
        if not raw and tokenizer.chat_template is not None:
            tokens = tokenizer.apply_chat_template(
                [{"role": "user", "content": prompt}], add_generation_prompt=True
            )
        mx.reset_peak_memory()
        for response in stream_generate(
            model,
            tokenizer,
            tokens,
            max_tokens=max_tokens,
            sampler=make_sampler(temp=temp, top_p=top_p),
        ):
            self.stats.prompt_tokens = response.prompt_tokens
            self.stats.generated_tokens = response.generation_tokens
            self.stats.prompt_tps = float(response.prompt_tps)
            self.stats.generation_tps = float(response.generation_tps)
            self.stats.peak_memory_bytes = int(mx.get_peak_memory())
            self.stats.finish_reason = response.finish_reason
            if response.text:
                yield response.text


def generate_stream(
    path: Path,
    prompt: str,
    *,
    max_tokens: int = 256,
    temp: float = 0.0,
    top_p: float = 1.0,
    seed: int | None = None,
    raw: bool = False,
    adapter_path: Path | None = None,
) -> GenerationStream:
    """Stream generated text; the chat template wraps the prompt unless raw or there is none.

    temp 0 is greedy (deterministic). After iteration, `.stats` is a GenerationStats.
    With `adapter_path`, the model runs with that (unfused) adapter, as mlx-lm loads it.
    """
    return GenerationStream(path, prompt, max_tokens=max_tokens, temp=temp, top_p=top_p,
                            seed=seed, raw=raw, adapter_path=adapter_path)  # fmt: skip
