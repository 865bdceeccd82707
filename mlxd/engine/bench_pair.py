"""Side-by-side benchmarks in one process: with a draft model vs without, cached prefix vs cold.

Both sides of each trial use the same random prompt and alternate, so drift (heat, other
load) touches both alike and the ratio is fair.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np


@dataclass
class PairTrial:
    """One trial: the plain side (no draft / cold prefill) and the other side."""

    prompt_tokens: int
    plain_ttft_s: float
    plain_generation_tps: float
    plain_prompt_tps: float
    other_ttft_s: float
    other_generation_tps: float
    other_prompt_tps: float
    other_prompt_tokens: int  # tokens the other side prefilled (the suffix, with a cache)
    generated_tokens: int
    other_total_s: float
    peak_memory_bytes: int
    accepted_tokens: int | None = None  # draft only
    proposed_tokens: int | None = None


@dataclass
class PairResult:
    points: list[tuple[int, int]]  # (prompt tokens, gen tokens)
    trials: dict[str, list[PairTrial]] = field(default_factory=dict)  # "p,g" -> trials
    load_time_s: float = 0.0
    model_memory_bytes: int = 0
    cached_tokens: int | None = None


def bench_pair(
    path: Path,
    points: list[tuple[int, int]],
    *,
    draft_path: Path | None = None,
    num_draft_tokens: int = 2,
    prompt_cache_path: Path | None = None,
    trials: int = 3,
    warmup: int = 1,
    seed: int = 0,
    on_progress: Callable[[float, str], None] | None = None,
) -> PairResult:
    """With ``draft_path``: speculative decoding against plain decoding. With
    ``prompt_cache_path``: a P-token suffix after the cached prefix, from the cache against a
    cold prefill of prefix + suffix. EOS is ignored: every run makes exactly G tokens."""
    import mlx.core as mx
    from mlx.utils import tree_flatten
    from mlx_lm import load

    from mlxd.jobs.sampling import Sampling

    from .bench import _token_pool
    from .generate import check_same_vocabulary

    if (draft_path is None) == (prompt_cache_path is None):
        raise ValueError("give exactly one of draft_path or prompt_cache_path")
    progress = on_progress or (lambda _f, _m: None)
    progress(0.0, f"loading {path}")
    tic = time.perf_counter()
    model, tokenizer, config = load(str(path), return_config=True)
    load_time_s = time.perf_counter() - tic
    tokenizer.eos_token_ids = set()
    draft_model = None
    prefix: list[int] = []
    if draft_path is not None:
        draft_model, draft_tokenizer = load(str(draft_path))
        check_same_vocabulary(tokenizer, draft_tokenizer)
    else:
        from .prompt_cache import load_cache_file

        prefix = list(load_cache_file(prompt_cache_path)[1]["tokens"])
    pool = _token_pool(tokenizer, config)
    result = PairResult(
        points=points,
        load_time_s=load_time_s,
        model_memory_bytes=int(sum(v.nbytes for _, v in tree_flatten(model.parameters()))),
        cached_tokens=len(prefix) if prompt_cache_path is not None else None,
    )

    sides = _Sides(model, tokenizer, draft_model, num_draft_tokens, prefix, prompt_cache_path)
    runs_total = len(points) * (warmup + trials)
    runs_done = 0
    for point_index, (p, g) in enumerate(points):
        rng = np.random.default_rng([seed, point_index])
        sampling = Sampling(max_tokens=g)
        key = f"{p},{g}"
        result.trials[key] = []
        for run in range(warmup + trials):
            measured = run >= warmup
            progress(runs_done / runs_total, f"p={p} g={g}: {'trial' if measured else 'warmup'}")
            suffix = rng.choice(pool, size=p).tolist()
            mx.reset_peak_memory()
            plain, other = sides.both(suffix, sampling)
            runs_done += 1
            if measured:
                result.trials[key].append(_trial(p, len(suffix), plain, other))
    progress(1.0, "done")
    return result


@dataclass
class _Sides:
    """The two sides of a run: plain decoding, and the draft model's or the cache's."""

    model: Any
    tokenizer: Any
    draft_model: Any
    num_draft_tokens: int
    prefix: list[int]  # the cached prefix (prompt cache side)
    prompt_cache_path: Path | None

    def one(self, tokens: list[int], sampling, **kw: Any):
        from .generate import stream_responses
        from .types import GenerationStats

        stats = GenerationStats()
        for _ in stream_responses(self.model, self.tokenizer, tokens, sampling, stats=stats, **kw):
            pass
        return stats

    def both(self, suffix: list[int], sampling) -> tuple[Any, Any]:
        """The plain side and the other (with the draft model, or from the cache)."""
        if self.draft_model is not None:
            plain = self.one(suffix, sampling)
            return plain, self.one(
                suffix,
                sampling,
                draft_model=self.draft_model,
                num_draft_tokens=self.num_draft_tokens,
            )
        import mlx.core as mx

        from .prompt_cache import load_cache_file

        plain = self.one(self.prefix + suffix, sampling)
        cache = load_cache_file(self.prompt_cache_path)[0]  # a fresh copy per trial
        mx.eval([c.state for c in cache])
        return plain, self.one(suffix, sampling, prompt_cache=cache)


def _trial(p: int, other_prompt: int, plain, other) -> PairTrial:
    """One measured run: both sides' figures, this run's peak memory."""
    import mlx.core as mx

    return PairTrial(
        prompt_tokens=p,
        plain_ttft_s=plain.ttft_s,
        plain_generation_tps=plain.generation_tps,
        plain_prompt_tps=plain.prompt_tps,
        other_ttft_s=other.ttft_s,
        other_generation_tps=other.generation_tps,
        other_prompt_tps=other.prompt_tps,
        other_prompt_tokens=other_prompt,
        generated_tokens=other.generated_tokens,
        other_total_s=other.total_s,
        peak_memory_bytes=int(mx.get_peak_memory()),
        accepted_tokens=other.draft_accepted_tokens,
        proposed_tokens=other.draft_proposed_tokens,
    )
