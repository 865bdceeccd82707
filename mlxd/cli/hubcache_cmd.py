"""mlxd models scan | du: the shared HF cache, seen from the catalog."""

from __future__ import annotations

from pathlib import Path

import click

from mlxd.cli.context import catalog_errors, get_paths, get_store
from mlxd.cli.output import echo_json, emit, human_bytes, output_options

cache_option = click.option(
    "--cache-dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="The HF hub cache (default: HF_HUB_CACHE, or HF_HOME/hub)",
)


def _cache(cache_dir: Path | None) -> Path:
    from mlxd.hub.environment import settings

    return Path(cache_dir).expanduser().resolve() if cache_dir else settings().cache_dir


@click.command()
@cache_option
@output_options("show")
@catalog_errors
def scan(cache_dir: Path | None, fmt: str):
    """Register models already in the HF cache (from mlx-lm, 'hf download', ...)."""
    from mlxd.catalog.models import HubSnapshot, Model
    from mlxd.formats.modelfolder import ModelFolderError, inspect_folder
    from mlxd.hub.cache import scan as scan_cache
    from mlxd.hub.names import default_model_name

    store = get_store()
    cache = _cache(cache_dir)
    known = {(s.repo_id, s.commit_sha) for s in store.hub_snapshots()}
    added, skipped = [], []
    for snap in scan_cache(cache):
        if (snap.repo_id, snap.commit) in known:
            continue
        try:
            info = inspect_folder(snap.path)
        except ModelFolderError as e:
            skipped.append({"repo": snap.repo_id, "commit": snap.commit, "reason": str(e)})
            continue
        name = default_model_name(snap.repo_id)
        if store.find_model(name) is not None:
            name = f"{name}-{snap.commit[:7]}"
        if store.find_model(name) is not None:
            skipped.append(
                {
                    "repo": snap.repo_id,
                    "commit": snap.commit,
                    "reason": f"a model named '{name}' already exists",
                }
            )
            continue
        q = info.quantization or {}
        with store.write() as s:
            model = store.add_model(
                Model(
                    name=name,
                    path=str(snap.path),
                    format=info.format,
                    source="hub",
                    architecture=info.architecture,
                    num_parameters=info.num_parameters,
                    size_bytes=sum(f["size_bytes"] for f in snap.files),
                    dtype=info.dtype,
                    quant_bits=q.get("bits"),
                    quant_group_size=q.get("group_size"),
                    quant_mode=q.get("mode", "affine") if q else None,
                    bits_per_weight=info.bits_per_weight if q else None,
                    synthetic=(snap.path / "mlxd_synth.json").is_file(),
                    managed=False,
                    details={"hub": {"repo": snap.repo_id, "commit": snap.commit, "scanned": True}},
                ),
                session=s,
            )
            from mlxd.catalog.models import HubFile

            store.add_hub_snapshot(
                HubSnapshot(
                    model_id=model.id,
                    repo_id=snap.repo_id,
                    revision=snap.refs[0] if snap.refs else snap.commit,
                    commit_sha=snap.commit,
                    cache_dir=str(cache),
                    total_bytes=model.size_bytes,
                    file_count=len(snap.files),
                    is_mlx=info.format == "mlx",
                    verified_at=None,  # found, not fetched: LFS hashes are the blobs' names
                    details={"scanned": True},
                ),
                [HubFile(**f) for f in snap.files],
                session=s,
            )
        added.append({"id": model.id, "name": name, "repo": snap.repo_id, "commit": snap.commit})
    if fmt == "json":
        echo_json({"cache_dir": str(cache), "added": added, "skipped": skipped})
        return
    for a in added:
        click.echo(f"Registered model {a['id']}: {a['name']} ({a['repo']}@{a['commit'][:12]})")
    for sk in skipped:
        click.echo(f"Skipped {sk['repo']}@{sk['commit'][:12]}: {sk['reason']}")
    if not added and not skipped:
        click.echo(f"Nothing new in the HF cache at {cache}.")


DU_FIELDS = (
    *("model", "repo", "commit", "refs", "where"),
    *("size_bytes", "unique_bytes", "shared_bytes"),
)


def _du_row(*values) -> dict:
    return dict(zip(DU_FIELDS, values, strict=True))


@click.command()
@cache_option
@output_options("list")
@catalog_errors
def du(cache_dir: Path | None, fmt: str):
    """Show disk use per model, and what revisions of one repo share."""
    from mlxd.formats.modelfolder import folder_size
    from mlxd.hub.cache import disk_usage, is_inside

    store = get_store()
    cache = _cache(cache_dir)
    revisions, cache_total = disk_usage(cache)
    names = {}
    for snap in store.hub_snapshots():
        model = store.find_model(snap.model_id)
        if model is not None:
            names[(snap.repo_id, snap.commit_sha)] = model.name
    rows = [
        _du_row(
            names.get((r.repo_id, r.commit)),
            *(r.repo_id, r.commit, ",".join(r.refs), "hf-cache"),
            *(r.size_on_disk, r.unique_bytes, r.shared_bytes),
        )
        for r in revisions
    ]
    models_dir = get_paths().models
    own_total = 0
    for m in store.list_models():
        if m.managed and Path(m.path).is_dir() and is_inside(m.path, models_dir):
            size = folder_size(Path(m.path))
            own_total += size
            rows.append(_du_row(m.name, None, None, "", "mlxd", size, size, 0))
    emit(
        fmt,
        rows,
        fields=DU_FIELDS,
        headers=["MODEL", "REPO", "COMMIT", "REFS", "SIZE", "UNIQUE", "SHARED"],
        table=lambda r: (
            r["model"] or "(not in catalog)",
            r["repo"] or "",
            (r["commit"] or "")[:12],
            r["refs"],
            human_bytes(r["size_bytes"]),
            human_bytes(r["unique_bytes"]),
            human_bytes(r["shared_bytes"]) if r["shared_bytes"] else "",
        ),
        empty="No models on disk yet.",
    )
    if fmt == "text":
        click.echo(
            f"HF cache {cache}: {human_bytes(cache_total)}; "
            f"mlxd models {models_dir}: {human_bytes(own_total)}"
        )
