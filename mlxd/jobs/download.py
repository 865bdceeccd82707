"""download: pull a model from the Hugging Face hub into the HF cache, verified, and register it.

The files stay in the shared HF cache (no copy into MLXD_HOME): the catalog row points at
the cache's snapshot folder and records the repo, the exact commit and every file's hash.
Pre-flight refusals (missing repo or revision, gated, unsupported model type, remote code,
disk) happen in the child before any weight moves.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mlxd.jobs.base import FinishContext, JobFailed, JobSpec, RunContext, SpecError, check_name

PRODUCES_MODEL = False  # the files live in the HF cache, not under MLXD_HOME/models
# No spare child's imports beside a pull: on a fast link (loopback, a LAN mirror) the transfer
# and its hashing are CPU-bound, and the spare's imports slowed them by about 30%.
QUIET = True
TIME_LIMIT_S = 24 * 3600  # the default of --timeout


@dataclass
class Spec(JobSpec):
    repo: str  # "org/name", or "org/name@revision"
    revision: str | None = None  # a branch, a tag or a commit; None: the default branch
    name: str | None = None  # None: the repo's name (plus the commit if that name is taken)
    include: list[str] = field(default_factory=list)
    exclude: list[str] = field(default_factory=list)
    trust_remote_code: bool = False

    def __post_init__(self):
        from mlxd.hub.names import HubRefError, parse_repo_ref

        try:
            repo, rev = parse_repo_ref(self.repo)
            if rev is not None and self.revision is not None and rev != self.revision:
                raise SpecError(f"two revisions given: '{rev}' and '{self.revision}'")
            if self.revision is not None:
                parse_repo_ref(f"{repo}@{self.revision}")
        except HubRefError as e:
            raise SpecError(str(e)) from None
        self.repo, self.revision = repo, rev or self.revision
        if self.name is not None:
            check_name(self.name)
        for glob in [*self.include, *self.exclude]:
            if not glob.strip():
                raise SpecError("an empty --include/--exclude glob")

    @property
    def ref(self) -> str:
        return self.repo + (f"@{self.revision}" if self.revision else "")


def describe(spec: Spec) -> str:
    return f"pull {spec.ref}" + (f" -> {spec.name}" if spec.name else "")


def prepare(spec: Spec, store, job=None) -> dict[str, Any]:
    # Commits of this repo the catalog already holds: pulling one again is a no-op.
    known = {}
    for snap in store.hub_snapshots(spec.repo):
        model = store.find_model(snap.model_id)
        if model is not None:
            known[snap.commit_sha] = {"id": model.id, "name": model.name}
    return {"known": known}


def run(spec: Spec, inputs: dict[str, Any], ctx: RunContext) -> dict[str, Any]:
    import sys
    import time

    from mlxd.formats.modelfolder import inspect_folder, tokenizer_identity
    from mlxd.formats.support import unsupported_reason
    from mlxd.hub.preflight import preflight
    from mlxd.hub.pull import pull
    from mlxd.reports.fmt import size as human_bytes

    began = time.monotonic()
    ctx.progress(0.0, f"pre-flight {spec.ref}")
    plan = preflight(
        spec.repo,
        spec.revision,
        include=spec.include or None,
        exclude=spec.exclude or None,
        trust_remote_code=spec.trust_remote_code,
        model_check=unsupported_reason,
    )
    known = inputs.get("known", {}).get(plan.commit)
    if known:
        ctx.progress(1.0, f"already pulled as {known['name']}")
        return {"already": known, "commit": plan.commit}
    ctx.progress(
        0.0,
        f"fetching {len(plan.files)} files, {human_bytes(plan.missing_bytes)} not in the "
        f"cache yet (commit {plan.commit[:12]})",
    )
    total = max(plan.total_bytes, 1)
    preflight_s = time.monotonic() - began
    result = pull(plan, progress=lambda p: ctx.progress(0.99 * p.done_bytes / total, p.line()))
    result.preflight_s = preflight_s
    info = inspect_folder(Path(result.snapshot_path))
    # Where the time went, for the job's log.
    print(
        f"mlxd pull: pre-flight {result.preflight_s:.2f} s, transfer and verification "
        f"{result.seconds:.2f} s (hashing {result.hash_s:.2f} s of CPU in {len(result.files)} "
        f"files, {result.reread} read twice), total {time.monotonic() - began:.2f} s",
        file=sys.stderr,
    )
    return {
        **result.to_dict(),
        "format": info.format,
        "architecture": info.architecture,
        "dtype": info.dtype,
        "num_parameters": info.num_parameters,
        "quantization": info.quantization,
        "bits_per_weight": info.bits_per_weight if info.quantization else None,
        "synthetic": (Path(result.snapshot_path) / "mlxd_synth.json").is_file(),
        "tokenizer": tokenizer_identity(Path(result.snapshot_path)),
    }


def finish(spec: Spec, inputs: dict[str, Any], result: dict[str, Any], fin: FinishContext) -> None:
    from mlxd.catalog.models import HubFile, HubSnapshot, Model, utcnow
    from mlxd.hub.names import default_model_name
    from mlxd.reports.fmt import size as human_bytes

    if result.get("already"):
        known = result["already"]
        fin.output_model_id = known["id"]
        fin.summary.update(
            model=known["name"],
            commit=result["commit"],
            note="already pulled at this commit; nothing to do",
        )
        return
    name = spec.name
    if name is None:
        name = default_model_name(spec.repo)
        if fin.store.find_model(name) is not None:
            name = f"{name}-{result['commit'][:7]}"
    if fin.store.find_model(name) is not None:
        raise JobFailed(f"a model named '{name}' already exists; pull again with --name")
    quant = result.get("quantization") or {}
    model = Model(
        name=name,
        path=result["snapshot_path"],
        format=result["format"],
        source="hub",
        architecture=result.get("architecture"),
        num_parameters=result.get("num_parameters"),
        size_bytes=result["total_bytes"],
        dtype=result.get("dtype"),
        quant_bits=quant.get("bits"),
        quant_group_size=quant.get("group_size"),
        quant_mode=quant.get("mode", "affine") if quant else None,
        bits_per_weight=result.get("bits_per_weight"),
        synthetic=bool(result.get("synthetic")),
        created_by_job_id=fin.job.id,
        managed=False,  # the HF cache's, deleted only through the hub library
        details={
            "hub": {"repo": spec.repo, "revision": result["revision"], "commit": result["commit"]},
            # Read on the pulling host: other hosts compare tokenizers without the files.
            **({"tokenizer": result["tokenizer"]} if result.get("tokenizer") else {}),
        },
    )
    fin.store.add_model(model, session=fin.session)
    fin.output_model_id = model.id
    snapshot = HubSnapshot(
        model_id=model.id,
        repo_id=spec.repo,
        revision=result["revision"],
        commit_sha=result["commit"],
        endpoint=result.get("endpoint"),
        cache_dir=result["cache_dir"],
        total_bytes=result["total_bytes"],
        file_count=len(result["files"]),
        is_mlx=result["format"] == "mlx",
        pulled_by_job_id=fin.job.id,
        verified_at=utcnow(),
        details={
            "refetched": result.get("refetched") or [],
            "include": spec.include,
            "exclude": spec.exclude,
        },
    )
    files = [
        HubFile(path=f["path"], size_bytes=f["size_bytes"], sha256=f["sha256"], lfs=f["lfs"])
        for f in result["files"]
    ]
    fin.store.add_hub_snapshot(snapshot, files, session=fin.session)
    rate = result["fetched_bytes"] / result["seconds"] if result["seconds"] > 0 else 0
    fin.summary.update(
        model=name,
        commit=result["commit"],
        size=human_bytes(result["total_bytes"]),
        fetched=human_bytes(result["fetched_bytes"])
        + (f" at {human_bytes(rate)}/s" if result["fetched_bytes"] else ""),
        verified=f"{len(files)} files",
    )
    if result.get("refetched"):
        fin.summary["refetched"] = result["refetched"]
