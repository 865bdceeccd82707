"""The scheduling room as a library (no Click anywhere): one job, a graph with a dependency,
each typed refusal, and a graph refused whole with nothing written. Runs on SQLite and on
PostgreSQL (``tests/conftest.py`` BOTH_BACKENDS_MODULES)."""

from __future__ import annotations

import math

import pytest

from mlxd.catalog.models import Model
from mlxd.catalog.read import Reader
from mlxd.catalog.store import Store
from mlxd.config import paths
from mlxd.jobs.bench import Spec as BenchSpec
from mlxd.jobs.quantize import Spec as QuantizeSpec
from mlxd.scheduling import (
    BadArgument,
    BadPrerequisite,
    DoesNotFit,
    Node,
    NoPlace,
    QueueFull,
    SchedulingError,
    foreground_job,
    submit,
    submit_graph,
)


@pytest.fixture
def catalog(catalog_backend, tmp_path):
    """A catalog with one 1M-parameter model, 'tiny' (its files are not needed to queue)."""
    store = Store(paths())
    model = store.add_model(
        Model(
            name="tiny",
            path=str(tmp_path / "tiny"),
            format="mlx",
            source="synth",
            size_bytes=4_000_000,
            num_parameters=1_000_000,
        )
    )
    yield store, model.id
    store.close()


def _jobs() -> list:
    with Reader(paths()) as reader:
        return reader.jobs()


def _in_queue(pool: str = "default") -> set[int]:
    from mlxd.daemon.queue import pending_job_ids

    return pending_job_ids(paths(), pool)


def _quantize(model_id: int, bits: int = 4) -> QuantizeSpec:
    return QuantizeSpec(model="tiny", model_id=model_id, bits=bits, name=f"tiny-{bits}")


def test_submit_writes_the_row_and_wakes_the_queue(catalog):
    _, model_id = catalog
    queued = submit("quantize", _quantize(model_id), priority=5, timeout_s=60.0, user="ann")
    (job,) = _jobs()
    assert queued.job_ids == [job.id] and queued.job_id == job.id
    assert (job.kind, job.status, job.priority, job.timeout_s) == ("quantize", "queued", 5, 60.0)
    assert (job.submitted_by, job.pool, job.max_attempts) == ("ann", "default", 3)
    assert job.params == _quantize(model_id).to_params()
    assert job.log_path == str(paths().job_log(job.id))
    assert _in_queue() == {job.id}
    # One machine, no daemon ever ran: nothing to say (no trailing '.' in any note).
    assert all(not n.endswith(".") for n in queued.notes)


def test_a_graph_queues_its_dependency_and_wakes_only_what_can_start(catalog):
    _, model_id = catalog
    plan = [
        Node("quantize", _quantize(model_id)),
        Node("bench", BenchSpec(model="tiny-4"), after_node=0),
    ]
    queued = submit_graph(plan, pool="gpu-room", user="ann")
    first, second = _jobs()
    assert queued.job_ids == [first.id, second.id]
    assert second.after_job_id == first.id and first.after_job_id is None
    assert {first.pool, second.pool} == {"gpu-room"}
    # Nobody serves the pool: said, and only the quantize is in its queue (the bench is
    # released by the daemon when the quantize has succeeded).
    assert any("no daemon serves pool gpu-room" in n for n in queued.notes), queued.notes
    assert _in_queue("gpu-room") == {first.id}


def test_a_job_after_a_finished_one_is_woken_at_once(catalog):
    store, model_id = catalog
    done = submit("quantize", _quantize(model_id, 8)).job_id
    store.claim_job(done, host="h", daemon_pid=1)
    store.finish_job(done, "succeeded")
    later = submit("bench", BenchSpec(model="tiny"), after=done).job_id
    assert later in _in_queue()


def test_each_refusal_is_its_own_type_and_writes_nothing(catalog, monkeypatch):
    store, model_id = catalog
    cancelled = submit("quantize", _quantize(model_id, 8)).job_id
    store.request_cancel(cancelled)  # queued: cancelled at once
    before = len(_jobs())
    refusals = [
        (BadArgument, lambda: submit("quantize", _quantize(model_id), timeout_s=math.nan)),
        (BadArgument, lambda: submit("quantize", _quantize(model_id), pool="no room")),
        (BadArgument, lambda: submit_graph([Node("bench", BenchSpec(model="t"), after_node=1)])),
        (BadPrerequisite, lambda: submit("quantize", _quantize(model_id), after=999)),
        (BadPrerequisite, lambda: submit("quantize", _quantize(model_id), after=cancelled)),
    ]
    for error, call in refusals:
        with pytest.raises(error) as e:
            call()
        assert isinstance(e.value, SchedulingError) and "\n" not in str(e.value)
    assert "job 999 not found" in str(pytest.raises(BadPrerequisite, refusals[3][1]).value)

    monkeypatch.setenv("MLXD_QUEUE_LIMIT_PER_USER", "1")
    submit("quantize", _quantize(model_id), user="ann")  # the limit counts ann's jobs only
    with pytest.raises(QueueFull, match="ann already has 1 job"):
        submit("quantize", _quantize(model_id, 6), user="ann")
    monkeypatch.delenv("MLXD_QUEUE_LIMIT_PER_USER")
    assert len(_jobs()) == before + 1  # ann's one job

    monkeypatch.setenv("MLXD_MEMORY_BUDGET_BYTES", "1000")
    with pytest.raises(DoesNotFit, match="this machine's budget is 1.0 KB"):
        submit("quantize", _quantize(model_id, 3))
    monkeypatch.delenv("MLXD_MEMORY_BUDGET_BYTES")

    # Two machines share the catalog, neither with the memory for the job: no place for it.
    for host in ("h1", "h2"):
        store.machine_heartbeat(host, pools=["default"], facts={"memory_budget_bytes": 1000})
    with pytest.raises(NoPlace, match="no machine can run this job"):
        submit("quantize", _quantize(model_id, 3))
    assert len(_jobs()) == before + 1


def test_a_graph_is_refused_whole(catalog, monkeypatch):
    _, model_id = catalog
    plan = [
        Node("quantize", _quantize(model_id)),
        Node("bench", BenchSpec(model="tiny-4"), after_node=0),
        Node("bench", BenchSpec(model="tiny"), after=999),  # the last one cannot wait on 999
    ]
    with pytest.raises(BadPrerequisite):
        submit_graph(plan)
    assert _jobs() == []
    # Room for two more jobs, not for the three of the graph: none of them is queued.
    monkeypatch.setenv("MLXD_QUEUE_LIMIT_PER_USER", "2")
    with pytest.raises(QueueFull, match="this command queues 3 more"):
        submit_graph(plan[:2] + [Node("bench", BenchSpec(model="tiny"))], user="ann")
    assert _jobs() == [] and _in_queue() == set()


def test_a_foreground_job_has_a_row_and_no_queue_entry(catalog):
    job_id = foreground_job("probe", {"size_mb": 1, "repeats": 1}, user="ann")
    (job,) = _jobs()
    assert (job.id, job.kind, job.status, job.max_attempts) == (job_id, "probe", "queued", 1)
    assert _in_queue() == set()


HEAVY = ("sqlalchemy", "sqlmodel", "alembic")


@pytest.mark.parametrize(
    "args",
    [
        ["quantize", "tiny", "--bits", "4"],
        ["bench", "tiny", "-p", "16", "--pool", "gpu-room"],
        ["quality", "tiny", "--priority", "3"],
    ],
    ids=lambda args: args[0],
)
def test_a_submit_at_head_imports_no_sqlalchemy(args, catalog_backend, tiny_model_dir):
    """A submit on a catalog at head writes its row and wakes the queue through plain SQL:
    neither SQLAlchemy, SQLModel nor Alembic is imported (half a second of a submit)."""
    import subprocess
    import sys

    from tests.conftest import add_tiny, mlxd_env

    add_tiny(tiny_model_dir)
    code = (
        "import sys\nfrom mlxd.cli.main import cli\n"
        f"try:\n    cli.main({args!r})\nexcept SystemExit as e:\n    assert not e.code, e.code\n"
        f"sys.stderr.write(repr(sorted({{m.split('.')[0] for m in sys.modules}} & {set(HEAVY)!r})))"
    )
    home = paths().home
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=mlxd_env(home)
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.splitlines()[-1] == "[]", proc.stderr
    (job,) = _jobs()
    assert job.kind == args[0] and job.status == "queued"
    assert job.id in _in_queue(job.pool)
