"""mlxd models add|synth|import-gguf|list|show|rm."""

from __future__ import annotations

import click

from mlxd.cli.context import BadUsage, UserError, catalog_errors, get_paths, get_reader, get_store
from mlxd.cli.output import (
    echo_facts,
    echo_json,
    emit,
    human_bytes,
    human_count,
    output_options,
    row_dict,
    sig,
    when,
)
from mlxd.cli.params import SEED, spec_default
from mlxd.cli.submit import job_options, submit
from mlxd.jobs.synth import Spec as SynthSpec
from mlxd.vocab.choices import model_quant_label


@click.group()
def models():
    """Register, make, list and remove models in the catalog."""


@models.command()
@click.argument("path", type=click.Path(file_okay=False, path_type=str))
@click.option("--name", help="Catalog name (default: the folder's name)")
@catalog_errors
def add(path: str, name: str | None):
    """Register an existing Hugging Face or MLX model folder."""
    from pathlib import Path

    from mlxd.catalog.models import Model
    from mlxd.daemon.hosts import model_host_for
    from mlxd.formats.modelfolder import inspect_folder
    from mlxd.jobs.base import check_name, tokenizer_details

    info = inspect_folder(Path(path), check=True)
    name = name or info.path.name
    check_name(name)
    q = info.quantization or {}
    model = get_store().add_model(
        Model(
            name=name,
            path=str(info.path),
            format=info.format,
            source="local",
            architecture=info.architecture,
            num_parameters=info.num_parameters,
            size_bytes=info.size_bytes,
            dtype=info.dtype,
            quant_bits=q.get("bits"),
            quant_group_size=q.get("group_size"),
            quant_mode=q.get("mode", "affine") if q else None,
            bits_per_weight=info.bits_per_weight if q else None,
            managed=False,
            # The files are on this machine (unless on the shared volume): its jobs go here.
            host=model_host_for(info.path),
            details=tokenizer_details(None, info.path),
        )
    )
    click.echo(
        f"Added model {model.id}: {model.name} ({model.format}, {model.architecture}, "
        f"{human_count(model.num_parameters)} parameters)"
    )


@models.command()
@click.argument("name")
@click.option(
    "--arch",
    type=click.Choice(["llama", "qwen2"]),
    default=spec_default(SynthSpec, "arch"),
    show_default=True,
)
@click.option(
    "--size",
    type=click.Choice(["tiny", "small", "base"]),
    default=spec_default(SynthSpec, "size"),
    show_default=True,
    help="tiny ~1M, small ~10M, base ~100M parameters",
)
@click.option(
    "--like",
    type=click.Path(exists=True, dir_okay=False),
    help="Copy the shape of this config.json",
)
@click.option("--seed", type=SEED, default=spec_default(SynthSpec, "seed"), show_default=True)
@catalog_errors
def synth(name: str, arch: str, size: str, like: str | None, seed: int):
    """Make a real-architecture model with random weights, offline (no daemon)."""
    from pathlib import Path

    from mlxd.cli.submit import foreground_runner
    from mlxd.jobs.synth import Spec, check_like
    from mlxd.scheduling import foreground_job

    store = get_store()
    if store.find_model(name) is not None:
        raise BadUsage(f"a model named '{name}' already exists")
    spec = Spec(
        name=name, arch=arch, size=size, seed=seed, like=str(Path(like).resolve()) if like else None
    )
    if spec.like is not None:
        check_like(spec.like)  # before the job row: a file synth cannot use queues nothing
    outcome = foreground_runner().handle(foreground_job("synth", spec, paths=get_paths()))
    if outcome is None or outcome.status != "succeeded":
        raise UserError(f"synth failed: {outcome.error if outcome else 'not run'}")
    model = store.resolve_model(name)
    click.echo(
        f"Made model {model.id}: {model.name} ({model.architecture}, "
        f"{human_count(model.num_parameters)} parameters, random weights) at {model.path}"
    )


def _tokenizer(m) -> str | None:
    """What the catalog recorded of the model's tokenizer (drafts and bases must share it)."""
    from mlxd.jobs.base import tokenizer_label

    found = (m.details or {}).get("tokenizer")
    return tokenizer_label(found) if found else None


@models.command("import-gguf")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=str))
@click.option(
    "--name", help="Catalog name (default: the file's name, e.g. SmolLM2-135M-Instruct.Q4_1)"
)
@click.option(
    "--dequantize",
    is_flag=True,
    help="Dequantize to float32 (exact) instead of keeping Q4_0/Q4_1/Q8_0 as MLX affine",
)
@job_options
@catalog_errors
def import_gguf(
    file: str, name: str | None, dequantize: bool, wait, after, priority, timeout_s, pool
):
    """Import a llama-family GGUF file (llama.cpp's format) as an MLX model."""
    from pathlib import Path

    from mlxd.cli.submit import check_free_name
    from mlxd.formats.gguf import GGUFError, check_gguf  # the header reader: pure Python
    from mlxd.jobs.import_gguf import Spec

    path = Path(file).expanduser().resolve()
    # Refuse what the import would refuse before anything is queued: the header says it all.
    try:
        check_gguf(path, dequantize=dequantize)
    except GGUFError as e:
        raise BadUsage(f"cannot import {path.name}: {e}") from None
    except OSError as e:
        raise UserError(f"cannot read {path}: {e.strerror or e}") from None
    spec = Spec(file=str(path), name=name, dequantize=dequantize)
    check_free_name(spec.name)
    submit(
        "import_gguf", spec, wait=wait, after=after, priority=priority, timeout_s=timeout_s,
        pool=pool,
    )  # fmt: skip


@models.command("list")
@output_options()
def list_(fmt: str):
    """List the models in the catalog."""
    reader = get_reader()
    rows = reader.models()
    names = {m.id: m.name for m in rows}
    hub = reader.hub_snapshots_by_model()  # pulled models: their repo and commit
    for m in rows:
        snap = hub.get(m.id)
        m["hub_repo"], m["hub_commit"] = (snap.repo_id, snap.commit_sha) if snap else (None, None)
    rows.columns += ["hub_repo", "hub_commit"]
    emit(
        fmt,
        rows,
        headers=[
            "ID",
            "NAME",
            "FORMAT",
            "ARCH",
            "PARAMS",
            "SIZE",
            "DTYPE",
            "QUANT",
            "BPW",
            "PARENT/FROM",
        ],
        table=lambda m: (
            m.id,
            m.name,
            m.format,
            m.architecture,
            human_count(m.num_parameters),
            human_bytes(m.size_bytes),
            m.dtype,
            model_quant_label(m),
            f"{m.bits_per_weight:.2f}" if m.bits_per_weight else "",
            names.get(m.parent_id, "")
            or (f"{m.hub_repo}@{m.hub_commit[:12]}" if m.hub_repo else ""),
        ),
        empty="No models yet. Try 'mlxd models synth tiny' or 'mlxd models add PATH'.",
    )


@models.command()
@click.argument("ref")
@output_options("show")
@catalog_errors
def show(ref: str, fmt: str):
    """Show one model: facts, lineage, derived models and benchmarks."""
    reader = get_reader()
    m = reader.model(ref)
    lineage = reader.ancestors(m.id)
    children = reader.children(m.id)
    run_ids = reader.bench_run_ids(m.id)
    quality_runs = reader.quality_rows([m.id])
    if fmt == "json":
        data = row_dict(m)
        data["lineage"] = [{"id": p.id, "name": p.name, "source": p.source} for p in lineage]
        data["children"] = [{"id": c.id, "name": c.name} for c in children]
        data["bench_run_ids"] = run_ids
        data["hub"] = hub_facts(reader, m)
        data["quality_runs"] = [
            {
                k: q[k]
                for k in (
                    "run_id",
                    "job_id",
                    "base",
                    "perplexity",
                    "base_perplexity",
                    "kl_mean",
                    "top1_agreement",
                    "tokens",
                    "text_name",
                    "host",
                    "created_at",
                )
            }
            for q in quality_runs
        ]
        echo_json(data)
        return
    facts = [
        ("id", m.id),
        ("name", m.name),
        ("path", m.path),
        ("format", m.format),
        ("source", m.source + (f" (job {m.created_by_job_id})" if m.created_by_job_id else "")),
        ("architecture", m.architecture),
        ("parameters", f"{m.num_parameters:,}" if m.num_parameters else None),
        ("size on disk", human_bytes(m.size_bytes)),
        ("dtype", m.dtype),
        ("quantization", model_quant_label(m) or None),
        ("bits per weight", f"{m.bits_per_weight:.3f}" if m.bits_per_weight else None),
        ("tokenizer", _tokenizer(m)),
        ("created", when(m.created_at)),
        ("host", m.host),  # the machine that holds the files (none: the shared volume)
    ]
    if m.source == "gguf" and m.details.get("gguf_file"):
        # An import's lineage is a file, not a parent row: say which file, exactly.
        facts.append(("imported from", m.details["gguf_file"]))
        facts.append(("gguf sha256", m.details.get("gguf_sha256")))
    hub = hub_facts(reader, m)
    if hub:
        facts.append(("hub repo", f"{hub['repo']} ({hub['revision']})"))
        facts.append(("hub commit", hub["commit"]))
        facts.append(
            (
                "verified",
                f"{len(hub['files'])} files against the hub's hashes"
                if hub["verified_at"]
                else "no (found in the HF cache by 'models scan')",
            )
        )
    overrides = m.details.get("quantization_overrides") or {}
    if overrides:
        facts.append(
            (
                "quant overrides",
                ", ".join(
                    f"{layer} {q.get('bits')}bit-g{q.get('group_size')}"
                    for layer, q in overrides.items()
                ),
            )
        )
    chain = [m.name] + [p.name for p in lineage]
    removed = ((lineage[-1] if lineage else m).details or {}).get("parent_removed")
    if removed:
        chain.append(f"{removed['name']} (removed)")
    if len(chain) > 1:
        facts.append(("lineage", " <- ".join(chain)))
    if children:
        facts.append(("derived", ", ".join(c.name for c in children)))
    if run_ids:
        facts.append(("benchmarks", f"{len(run_ids)} run(s); see 'mlxd results --model {m.name}'"))
    for q in quality_runs:
        vs = f" vs {q['base']}: KL {sig(q['kl_mean'], 4)}" if q["kl_mean"] is not None else ""
        top1 = f", top-1 {q['top1_agreement']:.1%}" if q["top1_agreement"] is not None else ""
        facts.append(
            (
                "quality",
                f"run {q['run_id']}: perplexity {sig(q['perplexity'], 4)}{vs}{top1} "
                f"({q['tokens']} tokens of {q['text_name']}, {when(q['created_at'])})",
            )
        )
    for e in get_reader().eval_rows([m.id])[-3:]:
        drop = f", drop {e['accuracy_drop'] * 100:.1f} pt vs {e['base']}" if e["base"] else ""
        facts.append(
            (
                "accuracy",
                f"eval run {e['id']}: {e['accuracy']:.1%} of {e['items']} items "
                f"({', '.join(e['tasks'])}){drop}, {when(e['created_at'])}",
            )
        )
    echo_facts(facts)
    if m.synthetic:
        click.echo(
            "note: random weights (synthetic model): speed and memory figures are real for "
            "this shape, generated text, quality and accuracy figures are meaningless"
        )


@models.command()
@click.argument("ref")
@click.option("--files", is_flag=True, help="Also delete the model's folder (only ones mlxd made)")
@click.option(
    "--force", is_flag=True, help="Remove it although derived models, sweeps or scores refer to it"
)
@catalog_errors
def rm(ref: str, files: bool, force: bool):
    """Remove a model from the catalog (its benchmarks too; --files: its files)."""
    import shutil
    from pathlib import Path

    store = get_store()
    m = store.resolve_model(ref)
    busy = [
        j.id
        for j in store.list_jobs(["queued", "running"])
        if j.params.get("model_id") == m.id or j.params.get("model") == m.name
    ]
    if busy:
        raise UserError(f"model '{m.name}' is used by queued or running job(s) {busy}")
    affected = get_reader().references(m.id)
    if affected and not force:
        raise UserError(
            f"model '{m.name}' has {', '.join(affected)}; 'mlxd models rm {m.name} --force' "
            "removes its benchmarks, scores and sweeps (derived models stay, marked "
            "'parent removed')"
        )
    models_dir = get_paths().models
    path = Path(m.path)
    snap = store.hub_snapshot(m.id)
    if files and snap is not None:
        # A pulled model: its revision goes through the hub library's own delete strategy.
        from mlxd.hub.cache import delete_revision

        store.delete_model(m.id)
        freed = delete_revision(Path(snap.cache_dir), snap.commit_sha)
        what = (
            f"deleted {snap.repo_id}@{snap.commit_sha[:12]} from the HF cache "
            f"({human_bytes(freed)} freed)"
            if freed is not None
            else "its files were already gone from the HF cache"
        )
        click.echo(f"Removed model {m.id}: {m.name} and {what}")
        return
    if files and not (m.managed and path.resolve().is_relative_to(models_dir)):
        raise UserError(f"{path} was not made by mlxd; remove it yourself, or drop --files")
    store.delete_model(m.id)
    if files:
        shutil.rmtree(path, ignore_errors=True)
    click.echo(f"Removed model {m.id}: {m.name}" + (f" and deleted {path}" if files else ""))


def hub_facts(reader, m) -> dict | None:
    """Where a pulled model came from, and every file with its verified hash."""
    snap = reader.hub_snapshot(m.id)
    if snap is None:
        return None
    return {
        "repo": snap.repo_id,
        "revision": snap.revision,
        "commit": snap.commit_sha,
        "endpoint": snap.endpoint,
        "cache_dir": snap.cache_dir,
        "total_bytes": snap.total_bytes,
        "is_mlx": snap.is_mlx,
        "verified_at": snap.verified_at,
        "files": [
            {"path": f.path, "size_bytes": f.size_bytes, "sha256": f.sha256, "lfs": f.lfs}
            for f in reader.hub_files(snap.id)
        ],
    }


def _register_hub_cache_commands() -> None:
    from mlxd.cli.hubcache_cmd import du, scan

    models.add_command(scan)
    models.add_command(du)


_register_hub_cache_commands()
