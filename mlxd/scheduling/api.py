"""The one way into the queue: :func:`submit` for one job, :func:`submit_graph` for a plan
of jobs that wait on each other (a sweep, a fine-tune grid and its fuses, the pull queued
before a job that reads a hub id), :func:`foreground_job` for the row of a job a command
runs itself.

Every argument is explicit (no Click context): a command, a test or a server call these
alike. For the whole plan, before any row is written: the prerequisites (``after``), the
per-user limit, admission (memory, disk) and placement (``pool``, the model's host,
memory); then every row in one transaction, then the queue. A refusal raises one
:mod:`~mlxd.scheduling.errors` class and writes nothing: a graph is queued whole or not at
all.

The reads go through the catalog's fast ``Reader`` and the rows through plain SQL
(``catalog/jobrows.py``): a submit on a catalog at head imports neither SQLAlchemy, SQLModel
nor Alembic.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from mlxd.config import Paths
from mlxd.scheduling import admission, placement
from mlxd.scheduling.errors import BadArgument, BadPrerequisite
from mlxd.vocab import settings

if TYPE_CHECKING:
    from mlxd.catalog.read import Reader


@dataclass
class Node:
    """One job of a plan. ``params`` is a kind's Spec or its params dict; ``after`` a job
    already in the catalog, ``after_node`` the index of an earlier node of the same plan:
    this one starts only after that one succeeded."""

    kind: str
    params: Any
    after: int | None = None
    after_node: int | None = None
    priority: int = 0
    timeout_s: float | None = None
    max_attempts: int = 3


@dataclass
class Queued:
    """What was queued: the job ids (in the plan's order) and the notes to show the user,
    each once, without a trailing '.'."""

    job_ids: list[int]
    notes: list[str] = field(default_factory=list)

    @property
    def job_id(self) -> int:
        return self.job_ids[0]


def submit(
    kind: str,
    params_or_spec: Any,
    *,
    pool: str | None = None,
    after: int | None = None,
    priority: int = 0,
    timeout_s: float | None = None,
    user: str | None = None,
    max_attempts: int = 3,
    paths: Paths | None = None,
    reader: Reader | None = None,
) -> Queued:
    """Queue one job. ``pool`` None: placement decides; ``user`` None: the OS user."""
    node = Node(kind, params_or_spec, after, None, priority, timeout_s, max_attempts)
    return submit_graph([node], pool=pool, user=user, paths=paths, reader=reader)


def submit_graph(
    plan: Sequence[Node],
    *,
    pool: str | None = None,
    user: str | None = None,
    paths: Paths | None = None,
    reader: Reader | None = None,
) -> Queued:
    """Queue every node of ``plan``, or none of them (see the module's docstring).
    ``paths``: the home (default: this process's MLXD_HOME); ``reader``: the caller's
    open ``Reader`` on it (default: one for this call)."""
    from mlxd.catalog.jobrows import insert_jobs

    paths = paths or _default_paths()
    if not plan:
        return Queued([])
    with _reading(paths, reader) as reader:
        rows, notes = _prepare(reader, paths, plan, pool, user)
        ids = _write(paths, rows, insert_jobs)
        queue_note = _release(paths, reader, rows, ids)
    return Queued(ids, list(dict.fromkeys(n for n in [queue_note, *notes] if n)))


def check_graph(
    plan: Sequence[Node],
    *,
    pool: str | None = None,
    user: str | None = None,
    paths: Paths | None = None,
    reader: Reader | None = None,
) -> None:
    """Every check :func:`submit_graph` makes, writing nothing: for a caller that records
    something of its own before queueing (a fine-tune grid's sweep row)."""
    paths = paths or _default_paths()
    with _reading(paths, reader) as reader:
        _prepare(reader, paths, plan, pool, user)


@contextlib.contextmanager
def _reading(paths: Paths, reader: Reader | None) -> Iterator[Reader]:
    """The caller's reader, or one opened (and closed) here."""
    if reader is not None:
        yield reader
        return
    from mlxd.catalog.read import Reader

    with Reader(paths) as own:
        yield own


def _prepare(reader, paths: Paths, plan: Sequence[Node], pool, user) -> tuple[list, list]:
    """The rows to write for ``plan`` and the notes to show, or the refusal: arguments,
    prerequisites, the per-user limit, admission and placement of every node."""
    from mlxd.catalog.jobrows import NewJob

    user = user if user is not None else admission.current_user()
    params = [_checked(i, node) for i, node in enumerate(plan)]
    if pool is not None:
        _check_pool(pool)
    _check_prerequisites(reader, [n.after for n in plan])
    admission.check_queue_limit(user, _pending_of(reader, user), len(plan))
    machines = reader.machines()
    rows: list[NewJob] = []
    notes: list[str | None] = []
    for node, node_params in zip(plan, params, strict=True):
        est = admission.estimate(node.kind, node_params, reader)
        disk_note = admission.check_at_submit(est, paths.models)
        made_in = rows[node.after_node].pool if node.after_node is not None else None
        if made_in is None and node.after is not None and len(machines) > 1:
            made_in = reader.job(node.after).pool
        target, pool_note = _place(node_params, reader, machines, est, pool, made_in)
        notes += [disk_note, pool_note, _hub_note(node.kind, target, machines)]
        rows.append(
            NewJob(
                kind=node.kind,
                params=node_params,
                pool=target,
                priority=node.priority,
                after_job_id=node.after,
                after_row=node.after_node,
                timeout_s=node.timeout_s,
                max_attempts=node.max_attempts,
                submitted_by=user,
            )
        )
    return rows, notes


def foreground_job(
    kind: str, params_or_spec: Any, *, user: str | None = None, paths: Paths | None = None
) -> int:
    """The row of a job the calling process runs itself, now (``batch --foreground``,
    ``system probe``, ``models synth``): one attempt, never queued, so no limit, admission
    or placement (it runs here); its id."""
    from mlxd.catalog.jobrows import NewJob, insert_jobs
    from mlxd.catalog.read import Reader

    paths = paths or _default_paths()
    params = _checked(0, Node(kind, params_or_spec))
    Reader(paths).close()  # a new or older catalog is created or migrated first
    row = NewJob(
        kind=kind,
        params=params,
        pool=placement.DEFAULT_POOL,
        max_attempts=1,
        submitted_by=user if user is not None else admission.current_user(),
    )
    return insert_jobs(paths, [row])[0]


def _default_paths() -> Paths:
    from mlxd.config import paths

    return paths()


def _checked(index: int, node: Node) -> dict[str, Any]:
    """The node's params dict, its arguments checked (BadArgument)."""
    if node.timeout_s is not None and not (math.isfinite(node.timeout_s) and node.timeout_s > 0):
        raise BadArgument(f"the timeout must be a number of seconds, not {node.timeout_s}")
    if node.after_node is not None and not 0 <= node.after_node < index:
        raise BadArgument(
            f"job {index} of the plan waits on job {node.after_node}, not an earlier one"
        )
    if node.after is not None and node.after_node is not None:
        raise BadArgument(f"job {index} of the plan waits on two jobs; one is the most")
    spec = node.params
    return spec if isinstance(spec, dict) else spec.to_params()


def _check_pool(pool: str) -> None:
    try:
        placement.check_name(pool, "pool")
    except ValueError as e:
        raise BadArgument(str(e)) from None


def _check_prerequisites(reader, afters: Sequence[int | None]) -> None:
    """A job may wait on one that is queued, running or done well; not on one that failed,
    was cancelled, or does not exist."""
    from mlxd.catalog.errors import NotFound

    for after in dict.fromkeys(a for a in afters if a is not None):
        try:
            pre = reader.job(after)
        except NotFound as e:
            raise BadPrerequisite(str(e)) from None
        if pre.status in ("failed", "cancelled"):
            raise BadPrerequisite(
                f"job {after} is {pre.status}; retry it first ('mlxd jobs retry {after}') "
                "and wait on the new job"
            )


def _pending_of(reader, user: str | None) -> int:
    """The user's queued and running jobs (read only when a limit is set)."""
    if admission.queue_limit_per_user() is None:
        return 0
    return reader.count_jobs(("queued", "running"), submitted_by=user)


def _place(params, reader, machines, est, pool, made_in) -> tuple[str, str | None]:
    """(pool, note) for a new job: ``pool`` if given; else, when several machines share the
    catalog, the host that holds its model (or the pool of the job that makes it,
    ``made_in``), or a pool with a machine that can hold it. The note says why nobody will
    run it now, when nobody serves the pool it goes to."""
    lease = settings.LEASE_TIMEOUT_S.get()
    if pool is None and len(machines) > 1:  # one machine runs everything
        model, model_host = _model_host(params, reader)
        if model_host is None and model is None and made_in is not None:
            model_host = made_in[1:] if made_in.startswith("@") else None
        if model_host is not None:
            target = placement.host_pool(model_host)
            why = placement.unserved(target, machines, lease)
            where = f"model '{model.name}' is only on host {model_host}" if model else None
            advice = why and placement.serve_advice(target)
            note = "; ".join(x for x in (where, why, advice) if x)
            return target, (note if why else None)
    memory = est.memory_bytes if est is not None and machines else None
    return placement.place(machines, lease, memory, pool)


def _model_host(params: dict, reader) -> tuple[Any, str | None]:
    """(the model the job reads, the host holding it if only that host has it). A model
    pulled from the hub is not tied to its host: the job's host fetches it first."""
    ref = params.get("model_id") or params.get("model")
    model = reader.find_model(ref) if ref is not None else None
    if model is None or model.source == "hub":
        return model, None
    return model, model.host


HUB_KINDS = ("download", "push")  # the jobs that talk to the hub with the daemon's settings


def _hub_note(kind: str, pool: str, machines) -> str | None:
    """For a pull or push: whether the daemon that serves ``pool`` sees another
    HF_ENDPOINT, token presence or offline mode than this process (its machine row says
    what it has)."""
    if kind not in HUB_KINDS:
        return None
    from mlxd.hub.environment import environment_drift

    for m in placement.live_machines(machines, settings.LEASE_TIMEOUT_S.get()):
        if placement.serves(m, pool):
            note = environment_drift((m.facts or {}).get("hub"), m.host_id)
            if note:
                return note
    return None


def _write(paths: Paths, rows, insert_jobs) -> list[int]:
    from mlxd.catalog.errors import NotFound

    try:
        return insert_jobs(paths, rows)
    except NotFound as e:  # the job to wait on went away since it was read
        raise BadPrerequisite(str(e)) from None


def _release(paths: Paths, reader, rows, ids: list[int]) -> str | None:
    """Enqueue each new job whose prerequisite allows it now (a job waiting on one still
    queued or running is released by the daemon when that ends); a note if the queue could
    not be written. The prerequisite is read again after the rows are in: one that ended in
    between has released its dependents before this job existed."""
    from mlxd.scheduling.queue import enqueue

    try:
        for row, job_id in zip(rows, ids, strict=True):
            if row.after_row is not None:
                continue
            if row.after_job_id is not None:
                status = reader.job(row.after_job_id).status
                if status in ("queued", "running"):
                    continue
                if status != "succeeded":
                    _fail_with(paths, row.after_job_id)
                    continue
            enqueue(paths, job_id, priority=row.priority, pool=row.pool)
    except Exception as e:  # noqa: BLE001
        # The catalog row is the job: a running daemon finds the row within seconds (and a
        # starting one at once), so this is a note, not an error.
        return (
            f"the queue could not be written ({type(e).__name__}); "
            "the daemon picks the job up from the catalog within seconds"
        )
    return None


def _fail_with(paths: Paths, job_id: int) -> None:
    """The prerequisite ended badly after the check: its dependents fail with it (rare: the
    Store's write, through the gate every other path uses)."""
    from mlxd.catalog.store import Store
    from mlxd.scheduling.gate import fail_dependents

    store = Store(paths)
    try:
        fail_dependents(store, job_id)
    finally:
        store.close()
