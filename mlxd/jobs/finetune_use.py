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


def fused_from(store, adapter):
    """The newest catalog model fused from ``adapter`` (lineage kept by the fuse job) whose
    folder is on this machine, or None."""
    from sqlmodel import select

    from mlxd.catalog.models import Model

    with store.read() as s:
        fused = s.exec(select(Model).where(Model.source == "fuse").order_by(Model.id.desc()))
        for m in fused:
            made_from = (m.details or {}).get("adapter") or {}
            if made_from.get("id") == adapter.id and made_from.get("name") == adapter.name:
                if Path(m.path).is_dir():
                    return m
    return None


def adapter_inputs(store, ref: str | int, model_id: int, *, with_fused: bool) -> dict:
    """What a job running ``model_id`` with adapter ``ref`` needs in its child: the adapter
    (checked against the model, JobFailed naming both if it does not fit) and, with
    ``with_fused``, the model fused from it if the catalog holds one."""
    from mlxd.jobs.base import JobFailed

    model = store.resolve_model(model_id)
    try:
        folder = adapter_for(store, ref, model)
    except CatalogError as e:
        raise JobFailed(str(e)) from None
    adapter = store.resolve_adapter(ref)
    out = {"adapter_id": adapter.id, "adapter_name": adapter.name, "adapter_path": str(folder)}
    fused = fused_from(store, adapter) if with_fused else None
    if fused is not None:
        out.update(fused_id=fused.id, fused_name=fused.name, fused_path=fused.path)
    return out
