"""cache_prompt: prefill a prompt once and keep its KV cache as a catalog artifact."""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mlxd.catalog.errors import CatalogError
from mlxd.jobs.base import (
    FinishContext,
    JobFailed,
    ModelRefSpec,
    RunContext,
    base_name,
    resolve_input_model,
)
from mlxd.vocab.errors import SpecError

PRODUCES_MODEL = False
QUIET = False
TIME_LIMIT_S = 2 * 3600  # the default of --timeout
KV_BITS = (4, 8)
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
# Bytes of each weight file read for the fingerprint (its start and its end).
FINGERPRINT_SAMPLE = 1 << 20


@dataclass
class Spec(ModelRefSpec):
    text: str = ""
    name: str | None = None
    kv_bits: int | None = None
    as_system: bool = False  # the text is a chat system prompt, in the model's template

    def __post_init__(self):
        if not self.text.strip():
            raise SpecError("the prompt to cache is empty")
        if self.kv_bits is not None and self.kv_bits not in KV_BITS:
            raise SpecError(f"--kv-bits must be one of {', '.join(map(str, KV_BITS))}")
        if self.name is None:
            digest = hashlib.sha256(self.text.encode()).hexdigest()[:8]
            what = "system" if self.as_system else "prompt"
            self.name = f"{base_name(self.model)}-{what}-{digest}"
        if not NAME_RE.match(self.name):
            raise SpecError(
                f"invalid cache name '{self.name}': use letters, digits, '.', '_' or '-'"
            )


def model_fingerprint(folder: Path) -> str:
    """Identifies a model's exact weights without reading gigabytes.

    config.json, and per weight file its size, its first and its last MiB: two models that
    differ only in their weight values (two seeds of one architecture) still differ here.
    """
    digest = hashlib.sha256()
    config = folder / "config.json"
    if config.exists():
        digest.update(config.read_bytes())
    for path in sorted(folder.glob("*.safetensors")):
        size = path.stat().st_size
        digest.update(f"{path.name}:{size}".encode())
        with open(path, "rb") as f:
            digest.update(f.read(FINGERPRINT_SAMPLE))
            if size > 2 * FINGERPRINT_SAMPLE:
                f.seek(size - FINGERPRINT_SAMPLE)
                digest.update(f.read())
    return digest.hexdigest()[:32]


def check_cache_matches(cache, model, model_name_of) -> None:
    """Refuse a prompt cache made from another model, naming both (SpecError), or one
    whose file is gone (CatalogError).

    ``model_name_of(id)`` gives the catalog name of the cache's model (None if gone).
    """
    if cache.model_id != model.id:
        made_with = model_name_of(cache.model_id) or f"model {cache.model_id}"
        raise SpecError(
            f"prompt cache '{cache.name}' was made with model '{made_with}', "
            f"not '{model.name}'; make one for it with 'mlxd cache-prompt {model.name}'"
        )
    if not Path(cache.path).is_file():  # its file is gone: a refusal, not a usage error
        raise CatalogError(f"prompt cache '{cache.name}' has no file at {cache.path}")
    if model_fingerprint(Path(model.path)) != cache.model_fingerprint:
        raise SpecError(
            f"prompt cache '{cache.name}' was made with other weights than model "
            f"'{model.name}' has now; make it again with 'mlxd cache-prompt {model.name}'"
        )


def cache_inputs(store, ref: str | int | None, model_id: int) -> dict[str, Any]:
    """For a job's prepare(): the prompt cache's file, checked against the job's model."""
    if ref is None:
        return {}
    try:
        cache = store.resolve_prompt_cache(ref)
        model = store.resolve_model(model_id)
        check_cache_matches(cache, model, lambda i: _name_of(store, i))
    except (CatalogError, SpecError) as e:
        raise JobFailed(str(e.args[0])) from None
    return {
        "prompt_cache_id": cache.id,
        "prompt_cache_path": cache.path,
        "prompt_cache_tokens": cache.num_tokens,
    }


def _name_of(store, model_id: int) -> str | None:
    m = store.find_model(model_id)
    return m.name if m else None


def describe(spec: Spec) -> str:
    bits = f" --kv-bits {spec.kv_bits}" if spec.kv_bits else ""
    return f"cache-prompt {spec.model} -> {spec.name}{bits}"


def prepare(spec: Spec, store, job=None) -> dict[str, Any]:
    inputs = resolve_input_model(spec, store)
    if store.find_prompt_cache(spec.name) is not None:
        raise JobFailed(f"a prompt cache named '{spec.name}' already exists")
    out = store.paths.home / "prompt-caches" / f"{spec.name}.safetensors"
    inputs["output_file"] = str(out)
    return inputs


def run(spec: Spec, inputs: dict[str, Any], ctx: RunContext) -> dict[str, Any]:
    import dataclasses

    from mlxd.engine.prompt_cache import make_cache_file

    final = Path(inputs["output_file"])
    partial = final.with_name(f".job-{ctx.job_id}-{final.name}")
    ctx.progress(0.1, f"prefilling {inputs['model_name']}")
    info = make_cache_file(
        Path(inputs["model_path"]),
        spec.text,
        partial,
        kv_bits=spec.kv_bits,
        as_system=spec.as_system,
        metadata={"mlxd_model": inputs["model_name"], "mlxd_model_id": str(inputs["model_id"])},
    )
    out = dataclasses.asdict(info)
    out["partial_file"] = str(partial)
    out["model_fingerprint"] = model_fingerprint(Path(inputs["model_path"]))
    ctx.progress(1.0, "done")
    return out


def finish(spec: Spec, inputs: dict[str, Any], result: dict[str, Any], fin: FinishContext) -> None:
    import os

    from mlxd.catalog.models import PromptCache

    final = Path(inputs["output_file"])
    os.replace(result["partial_file"], final)
    cache = PromptCache(
        name=spec.name,
        path=str(final),
        model_id=inputs["model_id"],
        model_fingerprint=result["model_fingerprint"],
        num_tokens=result["num_tokens"],
        kv_bits=spec.kv_bits,
        size_bytes=result["size_bytes"],
        text_sha256=hashlib.sha256(spec.text.encode()).hexdigest(),
        created_by_job_id=fin.job.id,
        details={
            "prefill_s": result["prefill_s"],
            "kv_group_size": result["kv_group_size"],
            "text_preview": json.dumps(spec.text[:80]),
        },
    )
    fin.store.add_prompt_cache(cache, session=fin.session)
    fin.summary.update({"prompt_cache": spec.name, "tokens": result["num_tokens"]})
