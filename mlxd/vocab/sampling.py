"""Sampling settings shared by generate, chat and batch: presets, then explicit options.

Pure Python (no mlx): the CLI resolves and validates the settings before anything loads;
``mlxd.engine.sampling`` turns them into mlx-lm's sampler and logits processors.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace
from typing import Any

from mlxd.vocab.errors import SpecError


@dataclass(frozen=True)
class Sampling:
    """How tokens are drawn. temp 0 is greedy (deterministic whatever the seed)."""

    temp: float = 0.0
    top_p: float = 1.0
    min_p: float = 0.0
    top_k: int = 0  # 0: no top-k cut
    repetition_penalty: float | None = None  # None or 1.0: none
    max_tokens: int = 256
    seed: int | None = None

    def __post_init__(self):
        if self.temp < 0:
            raise SpecError("--temp must be 0 or more")
        if not 0 < self.top_p <= 1:
            raise SpecError("--top-p must be above 0 and at most 1")
        if not 0 <= self.min_p < 1:
            raise SpecError("--min-p must be from 0 up to (not including) 1")
        if self.top_k < 0:
            raise SpecError("--top-k must be 0 (off) or more")
        if self.repetition_penalty is not None and self.repetition_penalty <= 0:
            raise SpecError("--repetition-penalty must be above 0 (1.0 is none)")
        if self.max_tokens < 1:
            raise SpecError("--max-tokens must be at least 1")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def describe(self) -> str:
        """One line for the stats output: what was actually used."""
        from mlxd.vocab.fmt import sig

        parts = [f"temp {sig(self.temp, 6)}", f"top-p {sig(self.top_p, 6)}"]
        if self.min_p:
            parts.append(f"min-p {sig(self.min_p, 6)}")
        if self.top_k:
            parts.append(f"top-k {self.top_k}")
        if self.repetition_penalty not in (None, 1.0):
            parts.append(f"repetition penalty {sig(self.repetition_penalty, 6)}")
        parts.append(f"max tokens {self.max_tokens}")
        if self.seed is not None:
            parts.append(f"seed {self.seed}")
        return ", ".join(parts)


# Starting points people reach for; any explicit option overrides a preset's value.
PRESETS: dict[str, dict[str, Any]] = {
    # Low temperature: code has few right next tokens; long answers.
    "code": {"temp": 0.2, "top_p": 0.95, "max_tokens": 1024},
    # Wider sampling and a mild penalty against loops.
    "creative": {
        "temp": 0.9,
        "top_p": 0.95,
        "min_p": 0.05,
        "repetition_penalty": 1.1,
        "max_tokens": 1024,
    },
    # Greedy: the most likely answer, short.
    "factual": {"temp": 0.0, "top_p": 1.0, "max_tokens": 256},
    # A little variety, medium length.
    "summarize": {"temp": 0.3, "top_p": 0.9, "repetition_penalty": 1.05, "max_tokens": 512},
}


def presets_help() -> str:
    """The presets with their values, for --help."""
    out = []
    for name, values in PRESETS.items():
        s = replace(Sampling(), **values)
        out.append(f"{name} ({s.describe()})")
    return "; ".join(out)


def resolve_sampling(preset: str | None = None, **explicit: Any) -> Sampling:
    """Defaults, then the preset, then every explicit option that is not None."""
    values: dict[str, Any] = {}
    if preset is not None:
        if preset not in PRESETS:
            raise SpecError(f"unknown preset '{preset}'; choose from {', '.join(PRESETS)}")
        values.update(PRESETS[preset])
    known = {f.name for f in fields(Sampling)}
    unknown = set(explicit) - known
    if unknown:
        raise TypeError(f"unknown sampling options: {', '.join(sorted(unknown))}")
    values.update({k: v for k, v in explicit.items() if v is not None})
    return Sampling(**values)


def sampling_from_dict(data: dict[str, Any] | None) -> Sampling:
    """A Sampling from a job row's JSON (keys it does not know are ignored)."""
    known = {f.name for f in fields(Sampling)}
    return Sampling(**{k: v for k, v in (data or {}).items() if k in known})
