"""Using an adapter with a model (generate, bench, quality): checked against its base first."""

from __future__ import annotations

from pathlib import Path

from mlxd.catalog.store import CatalogError


def adapter_for(store, ref: str | int, model) -> Path:
    """The folder of adapter `ref`, if it fits `model`; CatalogError (one line) if not."""
    from mlxd.jobs.base import JobFailed
    from mlxd.jobs.finetune import check_adapter_base

    adapter = store.resolve_adapter(ref)
    try:
        check_adapter_base(adapter, model)
    except JobFailed as e:
        raise CatalogError(str(e)) from None
    folder = Path(adapter.path)
    if adapter.iterations <= 0 or not (folder / "adapters.safetensors").is_file():
        raise CatalogError(f"adapter '{adapter.name}' has no trained weights in {folder} yet")
    return folder
