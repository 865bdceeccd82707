"""synth: a real-architecture model with random weights and a trained tokenizer, made offline."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from mlxd.jobs.base import FinishContext, JobSpec, RunContext, check_name
from mlxd.vocab.errors import SpecError

PRODUCES_MODEL = True
QUIET = False
TIME_LIMIT_S = 2 * 3600  # the default of --timeout
ARCHS = ("llama", "qwen2")
SIZES = ("tiny", "small", "base")


@dataclass
class Spec(JobSpec):
    name: str
    arch: str = "llama"
    size: str = "tiny"
    seed: int = 0
    like: str | None = None  # a config.json whose shape to copy

    def __post_init__(self):
        check_name(self.name)
        if self.arch not in ARCHS:
            raise SpecError(f"unknown architecture '{self.arch}'; choose from {', '.join(ARCHS)}")
        if self.like is None and self.size not in SIZES:
            raise SpecError(f"unknown size '{self.size}'; choose from {', '.join(SIZES)}")


# The shape keys a --like config.json must give (the rest have defaults).
LIKE_REQUIRED = (
    "hidden_size",
    "num_hidden_layers",
    "num_attention_heads",
    "intermediate_size",
    "vocab_size",
)


def check_like(path: str) -> None:
    """Refuse a --like file that synth could not copy a shape from, naming it (SpecError)."""
    import json
    from pathlib import Path

    try:
        config = json.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as e:
        raise SpecError(f"--like {path} cannot be read ({e.strerror or e})") from None
    except UnicodeDecodeError:
        raise SpecError(f"--like {path} is not UTF-8 text") from None
    except json.JSONDecodeError as e:
        raise SpecError(
            f"--like {path} is not valid JSON ({e.msg} at line {e.lineno}, column {e.colno})"
        ) from None
    if not isinstance(config, dict):
        raise SpecError(f"--like {path} is not a model config (not a JSON object)")
    arch = config.get("model_type")
    if arch not in ARCHS:
        raise SpecError(
            f"--like {path} has model_type {arch!r}; only {', '.join(ARCHS)} can be synthesised"
        )
    missing = [k for k in LIKE_REQUIRED if not isinstance(config.get(k), int) or config[k] < 1]
    if missing:
        raise SpecError(f"--like {path} gives no positive whole {', '.join(missing)}")


def describe(spec: Spec) -> str:
    shape = f"like {spec.like}" if spec.like else spec.size
    return f"synth {spec.name} ({spec.arch}, {shape}, seed {spec.seed})"


def prepare(spec: Spec, store, job=None) -> dict[str, Any]:
    return {}


def run(spec: Spec, inputs: dict[str, Any], ctx: RunContext) -> dict[str, Any]:
    from pathlib import Path

    from mlxd.engine.synth import synth_model

    ctx.progress(0.05, "training tokenizer and writing weights")
    like = Path(spec.like) if spec.like else None
    info = synth_model(ctx.output_dir, arch=spec.arch, size=spec.size, seed=spec.seed, like=like)
    ctx.progress(1.0, "done")
    return dict(info)


def finish(spec: Spec, inputs: dict[str, Any], result: dict[str, Any], fin: FinishContext) -> None:
    fin.register_model(
        name=spec.name,
        source="synth",
        parent_id=None,
        synthetic=True,
        num_parameters=result.get("num_parameters"),
        details={"arch": spec.arch, "size": spec.size, "seed": spec.seed, "like": spec.like},
    )
