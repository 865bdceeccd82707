"""What job kinds share: spec errors, model references, the contexts handed to them."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Protocol

from mlxd.formats.modelfolder import inspect_folder, tokenizer_identity
from mlxd.jobs.protocol import Event


class SpecError(ValueError):
    """Invalid job parameters; the message is one line a user can act on."""


NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
MAX_NAME_LENGTH = 100  # a folder name under models/, with room for suffixes like -4bit-g64


def check_name(name: str) -> None:
    """A catalog name is also a folder name under models/: nothing that escapes it."""
    if len(name) > MAX_NAME_LENGTH:
        raise SpecError(
            f"model name '{name[:20]}...' is {len(name)} characters; at most {MAX_NAME_LENGTH}"
        )
    if not NAME_RE.match(name) or name.isdigit():
        raise SpecError(
            f"invalid model name '{name}': use letters, digits, '.', '_' or '-' "
            "(and not only digits)"
        )


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


class JobKind(Protocol):
    """What a job kind's module provides (a module satisfies this Protocol structurally).

    A job flows: the CLI builds ``Spec`` (validation, no MLX) and queues it; the daemon calls
    ``prepare``; the job's child process calls ``run``; the daemon calls ``finish``.
    """

    #: The kind's parameters: a dataclass subclassing :class:`JobSpec`, validated in
    #: ``__post_init__`` (pure Python, cheap: the CLI builds it to refuse bad input before
    #: anything is queued). Stored as the job row's JSON ``params``.
    Spec: ClassVar[type[JobSpec]]

    #: True when the job makes a model folder: ``run`` gets ``ctx.output_dir`` (a partial
    #: folder) and the daemon renames it into ``MLXD_HOME/models/`` only after success.
    PRODUCES_MODEL: ClassVar[bool]

    #: True for jobs that measure speed: the daemon keeps other work (the next spare child's
    #: imports) off the CPU while they run.
    QUIET: ClassVar[bool]

    #: The job's default time limit in seconds (``--timeout`` overrides it): generous, there
    #: to free the queue from a job that will never end.
    TIME_LIMIT_S: ClassVar[float]

    def describe(self, spec: Any) -> str:
        """One line for job listings (``mlxd jobs list``), e.g. ``quantize tiny -> tiny-4bit``."""

    def prepare(self, spec: Any, store: Any, job: Any = None) -> dict[str, Any]:
        """In the daemon, before the child starts: resolve catalog references into the plain,
        JSON-able inputs the child needs (paths, ids); ``job`` is the claimed job row (None in
        a test). Raise :class:`JobFailed` to refuse."""

    def run(self, spec: Any, inputs: dict[str, Any], ctx: RunContext) -> dict[str, Any]:
        """In the job's child process (the only place MLX is imported, via ``mlxd.engine``):
        do the work, report ``ctx.progress``, return a JSON-able result."""

    def finish(
        self, spec: Any, inputs: dict[str, Any], result: dict[str, Any], fin: FinishContext
    ) -> None:
        """Back in the daemon, inside the transaction that marks the job succeeded: record
        the result in the catalog (``fin.register_model``, Store methods with
        ``session=fin.session``) and put what ``jobs show`` prints in ``fin.summary``."""


@dataclass
class ModelRefSpec(JobSpec):
    """A spec that works on one catalog model, named by REF (name, id or path).

    ``model_id`` is filled in at submit time when REF already exists; a job queued
    ``--after`` another may name a model that the other job is still making.
    """

    model: str
    model_id: int | None = None


def resolve_input_model(spec: ModelRefSpec, store) -> dict[str, Any]:
    """The catalog model a job reads, as plain inputs for the child (see add_model_input)."""
    model = store.resolve_model(spec.model_id if spec.model_id is not None else spec.model)
    inputs = {"model_id": model.id, "model_name": model.name}
    return add_model_input(inputs, store, model, "model_path")


def add_model_input(inputs: dict[str, Any], store, model, key: str) -> dict[str, Any]:
    """Set ``inputs[key]`` to the folder of ``model``, one of the models a job reads.

    A model pulled from the hub on another host (or whose HF cache folder is gone) gets
    ``None`` there and an entry under ``inputs["hub_fetch"][key]``: the child fetches that
    exact commit into this host's HF cache first (:func:`fetch_input_models`) and runs on
    the copy. Any other model without its folder here fails the job, naming it."""
    from mlxd.config import host_id

    elsewhere = model.host is not None and model.host != host_id()
    if model.source == "hub" and (elsewhere or not Path(model.path).is_dir()):
        fetch = hub_fetch_inputs(store, model)
        if fetch is not None:
            inputs.setdefault("hub_fetch", {})[key] = {**fetch, "name": model.name}
            inputs[key] = None
            return inputs
    if not Path(model.path).is_dir():
        raise JobFailed(f"model '{model.name}' has no folder at {model.path} (was it deleted?)")
    inputs[key] = model.path
    return inputs


def tokenizer_details(details: dict | None, folder: Path) -> dict:
    """A new model's details with its tokenizer's identity (``details["tokenizer"]``), read
    once from its folder where the files are: so any host can compare tokenizers later
    (bench --draft-model, quality --base), folder here or not."""
    found = tokenizer_identity(folder)
    return {**(details or {}), **({"tokenizer": found} if found else {})}


def model_tokenizer(model) -> dict[str, Any] | None:
    """A catalog model's tokenizer identity: read from its folder when it is here (models
    registered before it was recorded), else what the catalog recorded; None if neither."""
    if Path(model.path).is_dir():
        found = tokenizer_identity(Path(model.path))
        if found:
            return found
    return (model.details or {}).get("tokenizer")


def check_same_tokenizer(model, other, why: str) -> None:
    """SpecError naming both models and both tokenizers unless they share token ids. A side
    whose tokenizer is unknown here (its folder elsewhere, nothing recorded) is not judged:
    the job checks again where both folders are."""
    a, b = model_tokenizer(model), model_tokenizer(other)
    if a is None or b is None or a["sha256"] == b["sha256"]:
        return

    raise SpecError(
        f"'{model.name}' and '{other.name}' have different tokenizers ('{model.name}': "
        f"{tokenizer_label(a)}; '{other.name}': {tokenizer_label(b)}); {why}"
    )


def tokenizer_label(found: dict[str, Any]) -> str:
    """A tokenizer in words: its size and the start of its hash ("1,024 tokens, 9003c0b5d392")."""
    tokens = f"{found['tokens']:,} tokens, " if found.get("tokens") else ""
    return f"{tokens}{found['sha256'][:12]}"


def hub_fetch_inputs(store, model) -> dict[str, Any] | None:
    """What a child needs to fetch a pulled model again: repo, commit, globs, file hashes."""
    snap = store.hub_snapshot(model.id)
    if snap is None:
        return None
    details = snap.details or {}
    return {
        "repo": snap.repo_id,
        "commit": snap.commit_sha,
        "include": details.get("include") or [],
        "exclude": details.get("exclude") or [],
        "files": {f.path: f.sha256 for f in store.hub_files(snap.id)},
    }


def fetch_input_models(inputs: dict[str, Any], progress: Callable[[float, str], None]) -> None:
    """In the child, before the job's own work: fetch each ``hub_fetch`` model into this
    host's HF cache (verified against the catalog's hashes) and point its input at it."""
    import sys

    from mlxd.hub.errors import HubError
    from mlxd.hub.pull import fetch_pulled
    from mlxd.reports.fmt import size as human_bytes

    for key, fetch in (inputs.get("hub_fetch") or {}).items():
        name = fetch.get("name")
        ref = f"{fetch['repo']}@{fetch['commit'][:12]}"
        progress(0.0, f"fetching {name or ref} ({ref}) to this host first")
        try:
            result = fetch_pulled(
                fetch["repo"],
                fetch["commit"],
                include=fetch.get("include") or None,
                exclude=fetch.get("exclude") or None,
                expected=fetch.get("files") or None,
                progress=lambda p, ref=ref: progress(0.0, f"fetching {ref}: {p.line()}"),
            )
        except HubError as e:
            raise JobFailed(f"could not fetch model '{name}' here: {e}") from None
        inputs[key] = result.snapshot_path
        print(  # the job's log
            f"mlxd: model '{name}' ({ref}) pulled on another host: "
            f"{len(result.files)} files verified in this host's HF cache, "
            f"{human_bytes(result.fetched_bytes)} fetched in {result.seconds:.2f} s",
            file=sys.stderr,
        )


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
    # A kind's own event (``protocol.Event``) for its ``on_event`` in the daemon.
    emit: Callable[[Event, dict[str, Any]], None] = lambda event, data: None


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
        fields["details"] = tokenizer_details(fields.get("details"), self.output_path)
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
