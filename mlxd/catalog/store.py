"""The one object that opens, migrates and writes the catalog.

SQLite runs in WAL mode with a long busy timeout, and every write transaction starts with
``BEGIN IMMEDIATE``: a deferred transaction that reads and then writes can fail at once with
"database is locked" when another process writes in between; an immediate one waits its turn.
"""

from __future__ import annotations

import contextlib
import fcntl
import getpass
import hashlib
import json
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from sqlalchemy import delete, event, update
from sqlmodel import Session, create_engine, select

from mlxd.catalog import schema
from mlxd.catalog.models import (
    FINISHED_STATUSES,
    BenchRun,
    BenchTrial,
    Job,
    Model,
    QualityRun,
    Sweep,
    System,
    utcnow,
)
from mlxd.config import Paths

BUSY_TIMEOUT_MS = 30_000


class CatalogError(Exception):
    """A user-facing problem with a catalog request (unknown model, duplicate name...)."""


class NotFound(CatalogError):
    pass


def _make_engine(db_path: Path, *, immediate: bool):
    engine = create_engine(f"sqlite:///{db_path}", connect_args={"timeout": BUSY_TIMEOUT_MS / 1000})

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn, _record):
        # Let us issue BEGIN ourselves (pysqlite's implicit BEGIN is always deferred).
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        cur.execute("pragma journal_mode=wal")
        cur.execute(f"pragma busy_timeout={BUSY_TIMEOUT_MS}")
        cur.execute("pragma foreign_keys=on")
        cur.execute("pragma synchronous=normal")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn):
        conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")

    return engine


class Store:
    """Reads and writes the catalog at ``paths.catalog_db``; migrates it on open."""

    def __init__(self, paths: Paths, *, migrate: bool = True):
        self.paths = paths
        paths.home.mkdir(parents=True, exist_ok=True)
        self.db_path = paths.catalog_db
        self._read_engine = _make_engine(self.db_path, immediate=False)
        self._write_engine = _make_engine(self.db_path, immediate=True)
        if migrate and schema.current_revision(self.db_path) != schema.HEAD_REVISION:
            self._migrate()

    def _migrate(self) -> None:
        # Two processes opening a new catalog at once must not both run the migrations.
        lock_path = self.db_path.with_suffix(".migrate.lock")
        with open(lock_path, "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if schema.current_revision(self.db_path) != schema.HEAD_REVISION:
                schema.upgrade(self._write_engine)

    def close(self) -> None:
        self._read_engine.dispose()
        self._write_engine.dispose()

    # -- sessions -------------------------------------------------------------------------

    @contextlib.contextmanager
    def read(self) -> Iterator[Session]:
        with Session(self._read_engine, expire_on_commit=False) as s:
            yield s

    @contextlib.contextmanager
    def write(self) -> Iterator[Session]:
        """One short write transaction; committed on success, rolled back on error."""
        with Session(self._write_engine, expire_on_commit=False) as s:
            with s.begin():
                yield s

    # -- models ---------------------------------------------------------------------------

    def resolve_model(self, ref: str | int, session: Session | None = None) -> Model:
        """A model by catalog name, catalog id, or the path of its folder."""
        with contextlib.ExitStack() as stack:
            s = session or stack.enter_context(self.read())
            ref_s = str(ref)
            m = s.exec(select(Model).where(Model.name == ref_s)).first()
            if m is None and ref_s.isdigit():
                m = s.get(Model, int(ref_s))
            if m is None and ("/" in ref_s or ref_s.startswith(".")):
                path = str(Path(ref_s).expanduser().resolve())
                m = s.exec(select(Model).where(Model.path == path)).first()
            if m is None:
                raise NotFound(f"model '{ref}' not found; see 'mlxd models list'")
            return m

    def find_model(self, ref: str | int) -> Model | None:
        try:
            return self.resolve_model(ref)
        except NotFound:
            return None

    def add_model(self, model: Model, session: Session | None = None) -> Model:
        with contextlib.ExitStack() as stack:
            s = session or stack.enter_context(self.write())
            if s.exec(select(Model.id).where(Model.name == model.name)).first() is not None:
                raise CatalogError(f"a model named '{model.name}' already exists")
            s.add(model)
            s.flush()
            return model

    def list_models(self) -> list[Model]:
        with self.read() as s:
            return list(s.exec(select(Model).order_by(Model.id)))

    def children(self, model_id: int) -> list[Model]:
        with self.read() as s:
            return list(s.exec(select(Model).where(Model.parent_id == model_id)))

    def delete_model(self, model_id: int) -> None:
        with self.write() as s:
            m = s.get(Model, model_id)
            if m is None:
                raise NotFound(f"model {model_id} not found")
            # Children keep existing; they just lose their parent link.
            s.execute(update(Model).where(Model.parent_id == model_id).values(parent_id=None))
            run_ids = select(BenchRun.id).where(BenchRun.model_id == model_id)
            s.execute(delete(BenchTrial).where(BenchTrial.run_id.in_(run_ids)))
            s.execute(delete(BenchRun).where(BenchRun.model_id == model_id))
            # Its quality scores go with it; scores of others against it lose their base.
            s.execute(delete(QualityRun).where(QualityRun.model_id == model_id))
            s.execute(
                update(QualityRun)
                .where(QualityRun.base_model_id == model_id)
                .values(base_model_id=None)
            )
            # A sweep is a record about its base: without the base it means nothing.
            s.execute(delete(Sweep).where(Sweep.base_model_id == model_id))
            _forget_finetune_base(s, model_id)
            s.execute(
                update(Job).where(Job.output_model_id == model_id).values(output_model_id=None)
            )
            s.delete(m)

    # -- jobs -----------------------------------------------------------------------------

    def submit_job(
        self,
        kind: str,
        params: dict[str, Any],
        *,
        priority: int = 0,
        after_job_id: int | None = None,
        timeout_s: float | None = None,
        max_attempts: int = 3,
    ) -> Job:
        with self.write() as s:
            if after_job_id is not None and s.get(Job, after_job_id) is None:
                raise NotFound(f"job {after_job_id} not found; see 'mlxd jobs list'")
            job = Job(
                kind=kind,
                params=params,
                priority=priority,
                after_job_id=after_job_id,
                timeout_s=timeout_s,
                max_attempts=max_attempts,
                submitted_by=_user(),
            )
            s.add(job)
            s.flush()
            job.log_path = str(self.paths.job_log(job.id))
            return job

    def get_job(self, job_id: int) -> Job:
        with self.read() as s:
            job = s.get(Job, job_id)
            if job is None:
                raise NotFound(f"job {job_id} not found; see 'mlxd jobs list'")
            return job

    def list_jobs(
        self, statuses: Sequence[str] | None = None, kind: str | None = None, limit: int = 0
    ) -> list[Job]:
        with self.read() as s:
            q = select(Job).order_by(Job.id.desc())
            if statuses:
                q = q.where(Job.status.in_(statuses))
            if kind:
                q = q.where(Job.kind == kind)
            if limit:
                q = q.limit(limit)
            return list(reversed(list(s.exec(q))))

    def claim_job(self, job_id: int, *, host: str, daemon_pid: int) -> Job | None:
        """Mark a queued job running; None if someone else has it or it is no longer queued."""
        with self.write() as s:
            res = s.execute(
                update(Job)
                .where(Job.id == job_id, Job.status == "queued")
                .values(
                    status="running",
                    attempts=Job.attempts + 1,
                    started_at=utcnow(),
                    heartbeat_at=utcnow(),
                    host=host,
                    daemon_pid=daemon_pid,
                    progress=0.0,
                    message="starting",
                    error=None,
                    pid=None,
                )
            )
            if res.rowcount != 1:
                return None
            return s.get(Job, job_id)

    def update_job(self, job_id: int, **values: Any) -> None:
        with self.write() as s:
            s.execute(update(Job).where(Job.id == job_id).values(**values))

    def finish_job(
        self,
        job_id: int,
        status: str,
        *,
        error: str | None = None,
        session: Session | None = None,
        **values: Any,
    ) -> None:
        assert status in FINISHED_STATUSES
        with contextlib.ExitStack() as stack:
            s = session or stack.enter_context(self.write())
            if error:
                error = error.strip().splitlines()[-1] if error.strip() else error
            s.execute(
                update(Job)
                .where(Job.id == job_id)
                .values(status=status, error=error, finished_at=utcnow(), pid=None, **values)
            )

    def requeue_job(self, job_id: int, message: str) -> None:
        self.update_job(
            job_id, status="queued", pid=None, progress=0.0, message=message, started_at=None
        )

    def request_cancel(self, job_id: int) -> Job:
        """Cancel a queued job now, or ask the daemon to stop a running one."""
        with self.write() as s:
            job = s.get(Job, job_id)
            if job is None:
                raise NotFound(f"job {job_id} not found; see 'mlxd jobs list'")
            if job.status in FINISHED_STATUSES:
                raise CatalogError(f"job {job_id} is already {job.status}")
            if job.status == "queued":
                job.status = "cancelled"
                job.error = "cancelled before it started"
                job.finished_at = utcnow()
            else:
                job.cancel_requested = True
            s.add(job)
            return job

    def dependents(self, job_id: int) -> list[Job]:
        with self.read() as s:
            return list(
                s.exec(select(Job).where(Job.after_job_id == job_id, Job.status == "queued"))
            )

    def fail_dependents(self, job_id: int) -> list[int]:
        """Fail every queued job waiting (directly or not) on a job that did not succeed."""
        job = self.get_job(job_id)
        reason = f"prerequisite job {job_id} {job.status}" + (f": {job.error}" if job.error else "")
        failed, frontier = [], [job_id]
        while frontier:
            parent = frontier.pop()
            for dep in self.dependents(parent):
                with self.write() as s:
                    res = s.execute(
                        update(Job)
                        .where(Job.id == dep.id, Job.status == "queued")
                        .values(status="failed", error=reason, finished_at=utcnow())
                    )
                if res.rowcount == 1:
                    failed.append(dep.id)
                    frontier.append(dep.id)
        return failed

    # -- systems and benchmarks -----------------------------------------------------------

    def system_for(self, facts: dict[str, Any], session: Session | None = None) -> System:
        """The System row for these facts, created the first time they are seen."""
        fields = {k: facts.get(k) for k in System.model_fields if k not in ("id", "created_at")}
        fields.pop("fingerprint", None)
        fingerprint = hashlib.sha256(
            json.dumps(fields, sort_keys=True, default=str).encode()
        ).hexdigest()[:16]
        with contextlib.ExitStack() as stack:
            s = session or stack.enter_context(self.write())
            found = s.exec(select(System).where(System.fingerprint == fingerprint)).first()
            if found:
                return found
            system = System(fingerprint=fingerprint, **fields)
            s.add(system)
            s.flush()
            return system

    def add_bench_run(
        self, run: BenchRun, trials: list[BenchTrial], session: Session | None = None
    ) -> BenchRun:
        with contextlib.ExitStack() as stack:
            s = session or stack.enter_context(self.write())
            s.add(run)
            s.flush()
            for t in trials:
                t.run_id = run.id
                s.add(t)
            return run

    def bench_runs(self, model_ids: Sequence[int] | None = None, limit: int = 0) -> list[BenchRun]:
        with self.read() as s:
            q = select(BenchRun).order_by(BenchRun.id)
            if model_ids:
                q = q.where(BenchRun.model_id.in_(model_ids))
            if limit:
                q = q.limit(limit)
            return list(s.exec(q))

    def trials(self, run_id: int) -> list[BenchTrial]:
        with self.read() as s:
            return list(
                s.exec(
                    select(BenchTrial)
                    .where(BenchTrial.run_id == run_id)
                    .order_by(BenchTrial.trial_index)
                )
            )

    # -- fine-tuning: adapters, their training rows, sweeps -------------------------------------

    def resolve_adapter(self, ref: str | int, session: Session | None = None):
        """An adapter by catalog name, catalog id, or the path of its folder."""
        from mlxd.catalog.models import Adapter

        with contextlib.ExitStack() as stack:
            s = session or stack.enter_context(self.read())
            ref_s = str(ref)
            a = s.exec(select(Adapter).where(Adapter.name == ref_s)).first()
            if a is None and ref_s.isdigit():
                a = s.get(Adapter, int(ref_s))
            if a is None and ("/" in ref_s or ref_s.startswith(".")):
                path = str(Path(ref_s).expanduser().resolve())
                a = s.exec(select(Adapter).where(Adapter.path == path)).first()
            if a is None:
                raise NotFound(f"adapter '{ref}' not found; see 'mlxd adapters list'")
            return a

    def find_adapter(self, ref: str | int):
        try:
            return self.resolve_adapter(ref)
        except NotFound:
            return None

    def list_adapters(self, base_model_id: int | None = None) -> list:
        from mlxd.catalog.models import Adapter

        with self.read() as s:
            q = select(Adapter).order_by(Adapter.id)
            if base_model_id is not None:
                q = q.where(Adapter.base_model_id == base_model_id)
            return list(s.exec(q))

    def update_adapter(self, adapter_id: int, session: Session | None = None, **values) -> None:
        from mlxd.catalog.models import Adapter

        with contextlib.ExitStack() as stack:
            s = session or stack.enter_context(self.write())
            s.execute(
                update(Adapter)
                .where(Adapter.id == adapter_id)
                .values(updated_at=utcnow(), **values)
            )

    def finetune_steps(self, adapter_id: int) -> list:
        from mlxd.catalog.models import FinetuneStep

        with self.read() as s:
            q = select(FinetuneStep).where(FinetuneStep.adapter_id == adapter_id)
            return list(s.exec(q.order_by(FinetuneStep.iteration, FinetuneStep.id)))

    def finetune_evals(self, adapter_id: int) -> list:
        from mlxd.catalog.models import FinetuneEval

        with self.read() as s:
            q = select(FinetuneEval).where(FinetuneEval.adapter_id == adapter_id)
            return list(s.exec(q.order_by(FinetuneEval.iteration, FinetuneEval.id)))

    def delete_adapter(self, adapter_id: int) -> None:
        """Remove an adapter's row with its step and evaluation rows (not its folder)."""
        from mlxd.catalog.models import Adapter, FinetuneEval, FinetuneStep

        with self.write() as s:
            a = s.get(Adapter, adapter_id)
            if a is None:
                raise NotFound(f"adapter {adapter_id} not found")
            s.execute(delete(FinetuneStep).where(FinetuneStep.adapter_id == adapter_id))
            s.execute(delete(FinetuneEval).where(FinetuneEval.adapter_id == adapter_id))
            s.delete(a)

    def add_finetune_sweep(self, sweep, session: Session | None = None):
        with contextlib.ExitStack() as stack:
            s = session or stack.enter_context(self.write())
            s.add(sweep)
            s.flush()
            return sweep

    def get_finetune_sweep(self, sweep_id: int):
        from mlxd.catalog.models import FinetuneSweep

        with self.read() as s:
            sw = s.get(FinetuneSweep, sweep_id)
            if sw is None:
                raise NotFound(f"finetune sweep {sweep_id} not found; see 'mlxd finetune list'")
            return sw

    def list_finetune_sweeps(self) -> list:
        from mlxd.catalog.models import FinetuneSweep

        with self.read() as s:
            return list(s.exec(select(FinetuneSweep).order_by(FinetuneSweep.id)))


def _user() -> str | None:
    try:
        return getpass.getuser()
    except Exception:  # no passwd entry in some containers
        return os.environ.get("USER")


def _forget_finetune_base(s: Session, model_id: int) -> None:
    """A removed model's adapters stay (they name their base); its fine-tuning sweeps go."""
    from mlxd.catalog.models import Adapter, FinetuneSweep

    s.execute(update(Adapter).where(Adapter.base_model_id == model_id).values(base_model_id=None))
    sweep_ids = select(FinetuneSweep.id).where(FinetuneSweep.base_model_id == model_id)
    s.execute(update(Adapter).where(Adapter.sweep_id.in_(sweep_ids)).values(sweep_id=None))
    s.execute(delete(FinetuneSweep).where(FinetuneSweep.base_model_id == model_id))
