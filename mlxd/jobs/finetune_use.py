"""Using an adapter with a model (generate, bench, quality): checked against its base first."""

from __future__ import annotations

from pathlib import Path

from mlxd.catalog.store import CatalogError
from mlxd.vocab.choices import ADAPTER_FILE


def adapter_for(store, ref: str | int, model) -> Path:
    """The folder of adapter `ref`, if it fits `model`. One-line errors: SpecError when it
    was trained on another base (the two named together do not fit: a usage error, as
    `fuse` and `finetune --resume` say it), CatalogError when it has no weights yet."""
    from mlxd.jobs.base import JobFailed
    from mlxd.jobs.finetune import check_adapter_base
    from mlxd.vocab.errors import SpecError

    adapter = store.resolve_adapter(ref)
    try:
        check_adapter_base(adapter, model)
    except JobFailed as e:
        raise SpecError(str(e)) from None
    folder = Path(adapter.path)
    if adapter.iterations <= 0 or not (folder / ADAPTER_FILE).is_file():
        raise CatalogError(f"adapter '{adapter.name}' has no trained weights in {folder} yet")
    return folder


def adapter_inputs(store, ref: str | int, model_id: int, *, with_fused: bool) -> dict:
    """What a job running ``model_id`` with adapter ``ref`` needs in its child: the adapter
    (checked against the model, JobFailed naming both if it does not fit) and, with
    ``with_fused``, the model fused from it if the catalog holds one."""
    from mlxd.jobs.base import JobFailed
    from mlxd.vocab.errors import SpecError

    model = store.resolve_model(model_id)
    try:
        folder = adapter_for(store, ref, model)
    except (CatalogError, SpecError) as e:
        raise JobFailed(str(e)) from None
    adapter = store.resolve_adapter(ref)
    out = {"adapter_id": adapter.id, "adapter_name": adapter.name, "adapter_path": str(folder)}
    here = [m for m in store.fused_from(adapter) if Path(m.path).is_dir()] if with_fused else []
    if here:  # the newest whose folder is on this machine
        out.update(fused_id=here[0].id, fused_name=here[0].name, fused_path=here[0].path)
    return out
