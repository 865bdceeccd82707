"""Sampling settings -> mlx-lm's sampler and logits processors."""

from __future__ import annotations

from typing import Any

from mlxd.vocab.sampling import Sampling


def sampler_kwargs(sampling: Sampling) -> dict[str, Any]:
    """The keyword arguments mlx-lm's generate functions take: sampler, logits_processors.

    Seeds MLX's global random state when a seed is given, so sampled output repeats.
    """
    import mlx.core as mx
    from mlx_lm.sample_utils import make_logits_processors, make_sampler

    if sampling.seed is not None:
        mx.random.seed(sampling.seed)
    # mlx-lm's make_sampler treats top_p 0 or 1 alike as "off".
    sampler = make_sampler(
        temp=sampling.temp,
        top_p=sampling.top_p if sampling.top_p < 1 else 0.0,
        min_p=sampling.min_p,
        top_k=sampling.top_k,
    )
    penalty = sampling.repetition_penalty
    processors = make_logits_processors(
        repetition_penalty=penalty if penalty not in (None, 1.0) else None
    )
    return {"sampler": sampler, "logits_processors": processors}
