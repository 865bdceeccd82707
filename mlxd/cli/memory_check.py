"""Before a command loads a model itself: refuse one that clearly cannot fit in memory.

The budget is what the machine can give a model now: on macOS Metal's recommended working
set (mx.device_info), elsewhere psutil's available memory. ``MLXD_MEMORY_BUDGET_BYTES``
overrides it (to leave headroom for other work, or to test the refusal).
"""

from __future__ import annotations

import sys
from pathlib import Path

from mlxd.cli.context import UserError
from mlxd.cli.output import human_bytes
from mlxd.vocab.settings import MEMORY_BUDGET_BYTES


def memory_budget() -> tuple[int, str]:
    """(bytes a model may use, where that figure comes from)."""
    if MEMORY_BUDGET_BYTES.raw() is not None:
        budget = MEMORY_BUDGET_BYTES.get()
        if budget is None:
            raise UserError(f"{MEMORY_BUDGET_BYTES.name} must be a number of bytes")
        return budget, MEMORY_BUDGET_BYTES.name
    if sys.platform == "darwin":
        from mlxd.engine.backend import backend_facts  # imports mlx: only here, before a load

        working_set = backend_facts().get("max_recommended_working_set_bytes")
        if working_set:
            return int(working_set), "Metal's recommended working set"
    import psutil

    return int(psutil.virtual_memory().available), "available memory"


def model_bytes(model) -> int:
    if model.size_bytes:
        return int(model.size_bytes)
    path = Path(model.path)
    return sum(p.stat().st_size for p in path.glob("*.safetensors")) if path.is_dir() else 0


def smaller_variants(store, model, budget: int) -> list:
    """Catalog models of the same family (lineage) or architecture that would fit, best first.

    Best: the same family before the same architecture, then the largest that fits (the
    least quantized one the machine can hold).
    """
    everyone = store.list_models()
    by_id = {m.id: m for m in everyone}

    def root(m) -> int:
        seen = set()
        while m.parent_id is not None and m.parent_id in by_id and m.id not in seen:
            seen.add(m.id)
            m = by_id[m.parent_id]
        return m.id

    family = root(model)
    fits = [
        m
        for m in everyone
        if m.id != model.id
        and m.size_bytes
        and m.size_bytes * 1.2 < budget
        and (root(m) == family or (m.architecture and m.architecture == model.architecture))
    ]
    return sorted(fits, key=lambda m: (root(m) != family, -(m.size_bytes or 0)))


def check_model_fits(store, model, *, extra_bytes: int = 0) -> None:
    """UserError naming a smaller variant when the weights alone exceed the budget."""
    need = model_bytes(model) + extra_bytes
    budget, source = memory_budget()
    if need <= budget:
        return
    advice = "quantize it ('mlxd quantize " + model.name + " --bits 4')"
    options = smaller_variants(store, model, budget)
    if options:
        named = ", ".join(f"'{m.name}' ({human_bytes(m.size_bytes)})" for m in options[:2])
        advice = f"try {named}, or {advice}"
    raise UserError(
        f"model '{model.name}' needs about {human_bytes(need)} but this machine can give "
        f"{human_bytes(budget)} ({source}); {advice}; --no-memory-check loads it anyway"
    )
