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

    from mlxd.vocab.sampling import Sampling

    from .bench import _token_pool
    from .generate import check_same_vocabulary, stream_responses
    from .types import GenerationStats

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

    def one(tokens: list[int], sampling: Sampling, **kw: Any) -> GenerationStats:
        stats = GenerationStats()
        for _ in stream_responses(model, tokenizer, tokens, sampling, stats=stats, **kw):
            pass
        return stats

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
            if draft_model is not None:
                plain = one(suffix, sampling)
                other = one(
                    suffix, sampling, draft_model=draft_model, num_draft_tokens=num_draft_tokens
                )
                other_prompt = len(suffix)
            else:
                from .prompt_cache import load_cache_file

                plain = one(prefix + suffix, sampling)
                cache = load_cache_file(prompt_cache_path)[0]  # a fresh copy per trial
                mx.eval([c.state for c in cache])
                other = one(suffix, sampling, prompt_cache=cache)
                other_prompt = len(suffix)
            runs_done += 1
            if not measured:
                continue
            result.trials[key].append(
                PairTrial(
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
            )
    progress(1.0, "done")
    return result
