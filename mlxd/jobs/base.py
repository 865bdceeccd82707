"""What job kinds share: spec errors, model references, the contexts handed to them."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mlxd.modelfolder import inspect_folder


class SpecError(ValueError):
    """Invalid job parameters; the message is one line a user can act on."""


class JobFailed(RuntimeError):
    """A job that cannot go on, with a one-line reason for the user."""


class JobSpec:
    """What every kind's ``Spec`` dataclass shares: to and from the job row's JSON params."""

    def to_params(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_params(cls, params: dict[str, Any]):
        # Keys a newer or older mlxd wrote that this Spec does not know are left out.
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in params.items() if k in names})


@dataclass
class ModelRefSpec(JobSpec):
    """A spec that works on one catalog model, named by REF (name, id or path).

    ``model_id`` is filled in at submit time when REF already exists; a job queued
    ``--after`` another may name a model that the other job is still making.
    """

    model: str
    model_id: int | None = None


def resolve_input_model(spec: ModelRefSpec, store) -> dict[str, Any]:
    """The catalog model a job reads, as plain inputs for the child."""
    model = store.resolve_model(spec.model_id if spec.model_id is not None else spec.model)
    if not Path(model.path).is_dir():
        raise JobFailed(f"model '{model.name}' has no folder at {model.path} (was it deleted?)")
    return {"model_id": model.id, "model_name": model.name, "model_path": model.path}


def base_name(ref: str) -> str:
    """The name a derived model starts from: a catalog name, or a folder's name.

    Our own "-mlx" suffix (from convert) is dropped: quantizing tiny-mlx gives tiny-4bit-g64.
    """
    name = Path(ref.rstrip("/")).name if "/" in ref else ref
    return name.removesuffix("-mlx") or name


@dataclass
class RunContext:
    """Handed to ``run`` in the child process."""

    job_id: int
    output_dir: Path | None
    progress: Callable[[float, str], None]
    emit: Callable[[str, dict[str, Any]], None] = lambda event, data: None


@dataclass
class FinishContext:
    """Handed to ``finish`` in the daemon, inside the transaction that ends the job."""

    store: Any
    session: Any
    job: Any
    output_path: Path | None
    summary: dict[str, Any] = field(default_factory=dict)  # becomes job.result
    output_model_id: int | None = None

    def register_model(self, *, name: str, source: str, parent_id: int | None, **extra: Any):
        """Add the job's output folder to the catalog, described from the folder itself."""
        from mlxd.catalog.models import Model

        info = inspect_folder(self.output_path)
        fields = {
            "format": info.format,
            "architecture": info.architecture,
            "dtype": info.dtype,
            "size_bytes": info.size_bytes,
            "num_parameters": info.num_parameters,
            "bits_per_weight": info.bits_per_weight if info.quantization else None,
        }
        fields.update({k: v for k, v in extra.items() if v is not None})
        model = Model(
            name=name,
            path=str(self.output_path),
            source=source,
            parent_id=parent_id,
            created_by_job_id=self.job.id,
            **fields,
        )
        self.store.add_model(model, session=self.session)
        self.output_model_id = model.id
        self.summary["model"] = name
        return model
