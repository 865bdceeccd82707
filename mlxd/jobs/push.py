"""push: upload an MLX model from the catalog to the Hugging Face hub with a model card."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mlxd.jobs.base import FinishContext, JobFailed, ModelRefSpec, RunContext, SpecError

PRODUCES_MODEL = False
QUIET = False
TIME_LIMIT_S = 12 * 3600  # the default of --timeout


@dataclass
class Spec(ModelRefSpec):
    repo: str = ""  # the hub repo to push to, "org/name"
    private: bool = False
    revision: str | None = None  # a branch; None: main
    allow_synthetic: bool = False
    message: str | None = None

    def __post_init__(self):
        from mlxd.hub.names import HubRefError, parse_repo_ref

        try:
            repo, rev = parse_repo_ref(self.repo)
            if self.revision:
                parse_repo_ref(f"{repo}@{self.revision}")
        except HubRefError as e:
            raise SpecError(str(e)) from None
        if rev:
            raise SpecError("name the branch with --revision, not REPO@BRANCH")
        self.repo = repo


def describe(spec: Spec) -> str:
    return f"push {spec.model} -> {spec.repo}" + (f" ({spec.revision})" if spec.revision else "")


def check_pushable(model, allow_synthetic: bool) -> None:
    """The refusals that the catalog alone can tell (at submit and again when the job runs)."""
    if model.synthetic and not allow_synthetic:
        raise JobFailed(
            f"model '{model.name}' has random weights (synthetic); pass --allow-synthetic to "
            "push it anyway"
        )
    if model.format != "mlx":
        raise JobFailed(f"model '{model.name}' is not an MLX model; convert or quantize it first")


def prepare(spec: Spec, store, job=None) -> dict[str, Any]:
    from mlxd.catalog.read import Reader
    from mlxd.reports.modelcard import model_card

    model = store.resolve_model(spec.model_id if spec.model_id is not None else spec.model)
    check_pushable(model, spec.allow_synthetic)
    if not Path(model.path).is_dir():
        raise JobFailed(f"model '{model.name}' has no folder at {model.path}")
    with Reader(store.paths) as reader:
        card = model_card(reader, model.id, spec.repo)
    return {
        "model_id": model.id,
        "model_name": model.name,
        "model_path": model.path,
        "card": card,
    }


def run(spec: Spec, inputs: dict[str, Any], ctx: RunContext) -> dict[str, Any]:
    from mlxd.hub.push import push_folder

    ctx.progress(0.05, f"uploading {inputs['model_name']} to {spec.repo}")
    result = push_folder(
        Path(inputs["model_path"]),
        spec.repo,
        card=inputs["card"],
        private=spec.private,
        revision=spec.revision,
        message=spec.message,
    )
    ctx.progress(1.0, "done")
    return result.to_dict()


def finish(spec: Spec, inputs: dict[str, Any], result: dict[str, Any], fin: FinishContext) -> None:
    from mlxd.catalog.models import Model, utcnow

    model = fin.session.get(Model, inputs["model_id"])
    if model is not None:
        pushes = list((model.details or {}).get("hub_pushes", []))
        pushes.append(
            {
                "repo": spec.repo,
                "revision": result["revision"],
                "commit": result["commit"],
                "at": utcnow().isoformat(),
            }
        )
        model.details = {**(model.details or {}), "hub_pushes": pushes}
        fin.session.add(model)
    fin.summary.update(
        model=inputs["model_name"],
        repo=spec.repo,
        revision=result["revision"],
        commit=result["commit"],
        files=result["files"],
    )
