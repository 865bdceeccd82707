"""The dashboard's submit forms: a form's fields -> the kind's Spec (the CLI's validation and
one-line messages: the Spec's own checks, ``check_explicit_choices``, the catalog's
not-found message) -> ``mlxd.scheduling.submit_graph``. A refusal names the field it is
about, so the page shows it beside that field.

Converge with the API's spec builder (T2) at merge: both build the same Specs from the same
option names.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from mlxd.catalog.read import Reader
from mlxd.config import Paths

KINDS = ("bench", "quantize", "sweep", "pull")

# Each form's fields (the CLI's option names with '_'), in the order the form shows them.
FIELDS: dict[str, tuple[str, ...]] = {
    "quantize": ("model", "bits", "group_size", "mode", "recipe", "dtype", "name"),
    "bench": ("model", "prompt_tokens", "gen_tokens", "trials", "warmup"),
    "sweep": ("model", "bits", "group_size", "prompt_tokens", "gen_tokens", "trials"),
    "pull": ("repo", "name"),
}
COMMON = ("priority", "pool")
SHORT_FLAGS = {"-p": "prompt_tokens", "-g": "gen_tokens", "-n": "trials"}


class FieldError(ValueError):
    """A refused form: the one-line message, and the field it is about (None: the form)."""

    def __init__(self, message: str, field: str | None):
        super().__init__(message)
        self.message, self.field = message, field


@dataclass
class Submitted:
    job_ids: list[int]
    notes: list[str]


_FLAG = re.compile(r"(?<![\w-])(--[a-z][a-z-]*|-[pgn])\b")


def field_of(kind: str, message: str) -> str | None:
    """The field a one-line message is about: the first option it names (``--bits``,
    ``-g``); a message about the model or a name goes beside those."""
    fields = FIELDS[kind] + COMMON
    for flag in _FLAG.findall(message):
        name = SHORT_FLAGS.get(flag) or flag.lstrip("-").replace("-", "_")
        if name in fields:
            return name
    low = message.lower()
    if "model name" in low or "a model named" in low:
        return "name" if "name" in fields else None
    if kind == "pull" and ("repo" in low or "revision" in low):
        return "repo"
    if "model" in low and "model" in fields:
        return "model"
    return None


def _ints(value: str | None, what: str) -> list[int] | None:
    items = [v.strip() for v in (value or "").split(",") if v.strip()]
    if not items:
        return None
    try:
        return [int(v) for v in items]
    except ValueError:
        raise FieldError(
            f"{what} must be a comma-separated list of whole numbers, not '{','.join(items)}'",
            None,
        ) from None


def _int(value: str | None, what: str) -> int | None:
    numbers = _ints(value, what)
    if numbers is None:
        return None
    if len(numbers) != 1:
        raise FieldError(f"{what} takes one whole number, not '{value}'", None)
    return numbers[0]


def _text(form: dict[str, Any], name: str) -> str | None:
    value = str(form.get(name) or "").strip()
    return value or None


def submit_form(
    paths: Paths, reader: Reader, kind: str, form: dict[str, Any], user: str
) -> Submitted:
    """Queue what the form asks for, as ``user``; FieldError (naming the field) if refused."""
    from mlxd.catalog.errors import CatalogError
    from mlxd.scheduling import SchedulingError
    from mlxd.vocab.errors import SpecError

    if kind not in KINDS:
        raise FieldError(f"no form for '{kind}'; choose from {', '.join(KINDS)}", None)
    try:
        return _submit(paths, reader, kind, form, user)
    except FieldError as e:
        raise FieldError(e.message, e.field or field_of(kind, e.message)) from None
    except (SpecError, CatalogError, SchedulingError) as e:
        message = str(e.args[0]) if e.args else type(e).__name__
        raise FieldError(message, field_of(kind, message)) from None


def _submit(paths: Paths, reader: Reader, kind: str, form: dict[str, Any], user: str):
    from mlxd.scheduling import Node, submit_graph

    priority = _int(form.get("priority"), "--priority") or 0
    pool = _text(form, "pool")
    if pool is not None:
        from mlxd.scheduling.placement import check_name

        try:
            check_name(pool, "pool")
        except ValueError as e:
            raise FieldError(str(e), "pool") from None
    if kind == "sweep":
        return _sweep(paths, reader, form, priority, pool, user)
    spec = _spec(reader, kind, form)
    queued = submit_graph(
        [Node("download" if kind == "pull" else kind, spec, priority=priority)],
        pool=pool,
        user=user,
        paths=paths,
        reader=reader,
    )
    return Submitted(queued.job_ids, queued.notes)


def _model(reader: Reader, form) -> Any:
    ref = _text(form, "model")
    if ref is None:
        raise FieldError("a model is needed (a catalog name, id or path)", "model")
    return reader.model(ref)


def _check_free_name(reader: Reader, name: str) -> None:
    """As the CLI: a new model's name must be free in the catalog and in the queue."""
    if reader.find_model(name) is not None:
        raise FieldError(
            f"a model named '{name}' already exists; pass --name or remove it with "
            f"'mlxd models rm {name}'",
            "name",
        )
    for job in reader.jobs(("queued", "running")):
        if job.params.get("name") == name and job.kind != "bench":
            raise FieldError(
                f"job {job.id} ({job.kind}, {job.status}) will make a model named '{name}'; "
                "pass --name",
                "name",
            )


def _spec(reader: Reader, kind: str, form) -> Any:
    if kind == "quantize":
        from mlxd.jobs.quantize import Spec, check_explicit_choices
        from mlxd.vocab.choices import (
            DEFAULT_BITS,
            DEFAULT_GROUP_SIZE,
            is_quantized,
            model_quant_label,
        )

        model = _model(reader, form)
        bits = _int(form.get("bits"), "--bits")
        group_size = _int(form.get("group_size"), "--group-size")
        mode = _text(form, "mode") or "affine"
        recipe = _text(form, "recipe")
        check_explicit_choices(mode, recipe, bits, group_size)
        if is_quantized(model):
            parent = reader.model_by_id(model.parent_id)
            hint = f"; quantize its unquantized parent '{parent.name}'" if parent else ""
            raise FieldError(
                f"model '{model.name}' is already quantized ({model_quant_label(model)}){hint}",
                "model",
            )
        spec = Spec(
            model=model.name,
            model_id=model.id,
            bits=bits or DEFAULT_BITS,
            group_size=group_size or DEFAULT_GROUP_SIZE,
            mode=mode,
            recipe=recipe,
            dtype=_text(form, "dtype"),
            name=_text(form, "name"),
        )
        _check_free_name(reader, spec.name)
        return spec
    if kind == "bench":
        from mlxd.jobs.bench import Spec

        model = _model(reader, form)
        given = {
            "prompt_tokens": _ints(form.get("prompt_tokens"), "--prompt-tokens"),
            "gen_tokens": _ints(form.get("gen_tokens"), "--gen-tokens"),
            "trials": _int(form.get("trials"), "--trials"),
            "warmup": _int(form.get("warmup"), "--warmup"),
        }
        return Spec(
            model=model.name, model_id=model.id, **{k: v for k, v in given.items() if v is not None}
        )
    from mlxd.jobs.download import Spec

    repo = _text(form, "repo")
    if repo is None:
        raise FieldError("a hub repo is needed (org/name[@revision])", "repo")
    spec = Spec(repo=repo, name=_text(form, "name"))
    if spec.name:
        _check_free_name(reader, spec.name)
    return spec


def _sweep(paths: Paths, reader: Reader, form, priority: int, pool: str | None, user: str):
    from mlxd.catalog.store import Store
    from mlxd.jobs.sweeps import SweepRequest, new_steps, plan_sweep, record_sweep
    from mlxd.scheduling import Node, submit_graph

    model = _model(reader, form)
    given = {
        "bits": _ints(form.get("bits"), "--bits"),
        "group_sizes": _ints(form.get("group_size"), "--group-size"),
        "prompt_tokens": _int(form.get("prompt_tokens"), "--prompt-tokens"),
        "gen_tokens": _int(form.get("gen_tokens"), "--gen-tokens"),
        "trials": _int(form.get("trials"), "--trials"),
    }
    req = SweepRequest(base=model.name, **{k: v for k, v in given.items() if v is not None})
    plan = plan_sweep(reader, req)
    steps = new_steps(plan)
    index = {id(step): i for i, (step, _) in enumerate(steps)}
    nodes = [
        Node(
            step.kind,
            step.spec,
            after=None if id(gate) in index else (gate.job_id if gate else None),
            after_node=index.get(id(gate)),
            priority=priority,
        )
        for step, gate in steps
    ]
    queued = submit_graph(nodes, pool=pool, user=user, paths=paths, reader=reader)
    for (step, _), job_id in zip(steps, queued.job_ids, strict=True):
        step.job_id = job_id
    store = Store(paths)
    try:
        record_sweep(store, plan)
    finally:
        store.close()
    return Submitted(queued.job_ids, queued.notes)


# -- cancel and retry ------------------------------------------------------------------------


def cancel_job(paths: Paths, job_id: int) -> str:
    """Cancel a queued job, or ask its daemon to stop a running one (as ``jobs cancel``,
    without waiting for it to stop); the line to show."""
    from mlxd.catalog.errors import FencedOut
    from mlxd.catalog.store import Store
    from mlxd.daemon.control import request_cancel_file
    from mlxd.daemon.liveness import owner_alive
    from mlxd.scheduling.gate import fail_dependents

    store = Store(paths)
    try:
        if store.get_job(job_id).status == "running":
            request_cancel_file(paths, job_id)  # the supervisor sees it at once
        job = store.request_cancel(job_id)
        if job.status == "running" and not owner_alive(job):
            try:  # its daemon is gone: nobody else would end it
                store.finish_job(job_id, "cancelled", error="cancelled by user", fence=job)
            except FencedOut:
                pass
            job = store.get_job(job_id)
        if job.status == "cancelled":
            failed = fail_dependents(store, job_id)
            return f"Cancelled job {job_id}" + (
                f"; failed dependent job(s) {failed}" if failed else ""
            )
        return f"Stopping job {job_id}..."
    finally:
        store.close()


def retry_job(paths: Paths, reader: Reader, job_id: int, user: str) -> int:
    """Queue a failed or cancelled job again (``jobs retry``): a new job, same parameters,
    prerequisite and pool; its id."""
    from mlxd.catalog.errors import CatalogError
    from mlxd.catalog.store import Store
    from mlxd.jobs import load_kind
    from mlxd.scheduling import submit

    old = reader.job(job_id)
    if old.status not in ("failed", "cancelled"):
        raise CatalogError(
            f"job {job_id} is {old.status}; only failed or cancelled jobs are retried"
        )
    params = old.params
    hook = getattr(load_kind(old.kind), "retry_params", None)
    if hook is not None:
        store = Store(paths)
        try:
            params, _note = hook(store, store.get_job(job_id))
        finally:
            store.close()
    queued = submit(
        old.kind,
        params,
        pool=old.pool,
        after=old.after_job_id,
        priority=old.priority,
        timeout_s=old.timeout_s,
        max_attempts=old.max_attempts,
        user=user,
        paths=paths,
        reader=reader,
    )
    return queued.job_id
