"""The sampling options generate, chat and batch share: --preset and its overrides."""

from __future__ import annotations

from collections.abc import Callable

import click

from mlxd.cli.params import SEED, shown_default, shows_default
from mlxd.vocab.sampling import PRESETS, Sampling, presets_help


def _shown(name: str) -> dict:
    return shows_default(shown_default(Sampling, name))


def sampling_options(fn: Callable) -> Callable:
    """--preset, --max-tokens, --temp, --top-p, --min-p, --top-k, --repetition-penalty, --seed.

    Every option defaults to None so that a preset's value shows through unless the user
    gives one; resolve with ``mlxd.vocab.sampling.resolve_sampling(preset, **values)``.
    """
    opts = [
        click.option(
            "--preset",
            type=click.Choice(list(PRESETS)),
            help=f"Sampling preset: {presets_help()}. Explicit options override it",
        ),
        click.option(
            "--max-tokens",
            type=click.IntRange(min=1),
            help="Most tokens to generate",
            **_shown("max_tokens"),
        ),
        click.option(
            "--temp",
            type=click.FloatRange(min=0),
            help="Temperature; 0 is greedy",
            **_shown("temp"),
        ),
        click.option(
            "--top-p",
            type=click.FloatRange(0, 1, min_open=True),
            help="Nucleus sampling (1: off)",
            **_shown("top_p"),
        ),
        click.option(
            "--min-p",
            type=click.FloatRange(0, 1, max_open=True),
            help="Drop tokens below this share of the top one",
        ),
        click.option(
            "--top-k", type=click.IntRange(min=0), help="Keep only the K likeliest tokens (0: off)"
        ),
        click.option(
            "--repetition-penalty",
            type=click.FloatRange(min=0, min_open=True),
            help="Penalise recent tokens (1.0: none)",
        ),
        click.option(
            "--seed", type=SEED, help="Sampling seed: the same seed repeats sampled output"
        ),
    ]
    for opt in reversed(opts):
        fn = opt(fn)
    return fn


SAMPLING_KEYS = ("max_tokens", "temp", "top_p", "min_p", "top_k", "repetition_penalty", "seed")


def pop_sampling(kwargs: dict):
    """Take the sampling options out of a command's kwargs and resolve them."""
    from mlxd.vocab.sampling import resolve_sampling

    preset = kwargs.pop("preset", None)
    values = {k: kwargs.pop(k, None) for k in SAMPLING_KEYS}
    return resolve_sampling(preset, **values)
