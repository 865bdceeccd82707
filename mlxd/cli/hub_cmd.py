"""mlxd pull | push: the Hugging Face hub, through jobs like everything else."""

from __future__ import annotations

import click

from mlxd.cli.context import BadUsage, UserError, catalog_errors, get_store
from mlxd.cli.submit import job_options, submit


def check_offline_cache(repo: str, revision: str | None) -> str | None:
    """Offline with a cold cache is known at submit: say so now rather than in a failed job.
    Offline, the commit the cache holds for that revision; online, None (the hub decides)."""
    from mlxd.hub.cache import cached_commit
    from mlxd.hub.environment import settings

    hs = settings()
    if not hs.offline:
        return None
    commit = cached_commit(hs.cache_dir, repo, revision)
    if commit is None:
        raise UserError(
            f"offline (HF_HUB_OFFLINE=1) and {repo}@{revision or 'main'} is not in the HF cache "
            f"at {hs.cache_dir}"
        )
    return commit


def queue_pull(
    ref: str, *, after: int | None = None, priority: int = 0, quiet: bool = False
) -> int:
    """Queue a pull of hub id REF (for a command that names a model not pulled yet)."""
    from mlxd.jobs.download import Spec

    spec = Spec(repo=ref)
    check_offline_cache(spec.repo, spec.revision)
    return submit("download", spec, after=after, priority=priority, quiet=quiet)


def model_ref_or_pull(ref: str, after: int | None) -> tuple[str, int | None, int | None]:
    """(REF, its catalog id, the job to wait for): a hub id not in the catalog queues a pull.

    The dependent job names the repo id; it is resolved to the pulled model when it starts.
    """
    from mlxd.catalog.store import NotFound
    from mlxd.cli.submit import model_ref
    from mlxd.hub.names import looks_like_repo_id

    try:
        model = get_store().resolve_model(ref)  # a name, an id, a path, or a pulled repo
        return model.name, model.id, after
    except NotFound:
        if not looks_like_repo_id(ref):
            name, model_id = model_ref(ref, after)  # not yet made by job AFTER, or an error
            return name, model_id, after
    from mlxd.cli.submit import check_room

    check_room(2)  # the pull and the job that waits for it: both, or neither
    return ref, None, queue_pull(ref, after=after)


@click.command()
@click.argument("repo", metavar="REPO[@REVISION]")
@click.option("--name", help="Catalog name (default: the repo's name)")
@click.option("--include", multiple=True, metavar="GLOB", help="Only files matching (repeatable)")
@click.option(
    "--exclude", multiple=True, metavar="GLOB", help="Leave out files matching (repeatable)"
)
@click.option(
    "--trust-remote-code",
    is_flag=True,
    help="Allow a repo that ships its own modelling code (off by default)",
)
@job_options
@catalog_errors
def pull(repo, name, include, exclude, trust_remote_code, wait, after, priority, timeout_s):
    """Download a model from the Hugging Face hub, verified, into the HF cache."""
    from mlxd.cli.submit import check_free_name
    from mlxd.jobs.download import Spec

    spec = Spec(
        repo=repo,
        name=name,
        include=list(include),
        exclude=list(exclude),
        trust_remote_code=trust_remote_code,
    )
    if name:
        check_free_name(name)
    if spec.revision and len(spec.revision) == 40:
        commit = spec.revision
    else:
        commit = check_offline_cache(spec.repo, spec.revision)  # offline: what the cache has
    known = get_store().find_hub_model(f"{spec.repo}@{commit}") if commit else None
    if known is not None:
        at = "" if commit == spec.revision else f" at {commit[:12]} (the HF cache's)"
        click.echo(
            f"Already pulled: {spec.ref}{at} is model {known.id} ({known.name}); nothing to do."
        )
        return
    check_offline_cache(spec.repo, spec.revision)
    submit("download", spec, wait=wait, after=after, priority=priority, timeout_s=timeout_s)


@click.command()
@click.argument("ref")
@click.argument("repo")
@click.option("--private", is_flag=True, help="Create the repo private")
@click.option("--revision", metavar="BRANCH", help="Push to this branch (default: main)")
@click.option("--allow-synthetic", is_flag=True, help="Push a model with random weights anyway")
@click.option("--message", help="Commit message")
@job_options
@catalog_errors
def push(ref, repo, private, revision, allow_synthetic, message, wait, after, priority, timeout_s):
    """Upload an MLX model to the Hugging Face hub with a generated model card."""
    from mlxd.cli.submit import model_ref
    from mlxd.jobs.base import JobFailed
    from mlxd.jobs.push import Spec, check_pushable

    name, model_id = model_ref(ref, after)
    spec = Spec(
        model=name,
        model_id=model_id,
        repo=repo,
        private=private,
        revision=revision,
        allow_synthetic=allow_synthetic,
        message=message,
    )
    if model_id is not None:
        try:
            check_pushable(get_store().resolve_model(model_id), allow_synthetic)
        except JobFailed as e:
            raise BadUsage(str(e)) from None
    submit("push", spec, wait=wait, after=after, priority=priority, timeout_s=timeout_s)
