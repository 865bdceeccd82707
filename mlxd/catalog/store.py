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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import delete, event, update
from sqlmodel import Session, create_engine, select

from mlxd.catalog import backend, refs, schema
from mlxd.catalog.errors import CatalogError, FencedOut, NotFound
from mlxd.catalog.models import (
    FINISHED_STATUSES,
    BenchRun,
    BenchTrial,
    EvalItem,
    EvalRun,
    Job,
    Model,
    PromptCache,
    QualityRun,
    Sweep,
    System,
    utcnow,
)
from mlxd.config import Paths
from mlxd.system.permissions import share_files
from mlxd.vocab import settings


# A writer waits this long for another's lock; MLXD_BUSY_TIMEOUT_S changes it.
def busy_timeout_ms() -> int:
    return int(settings.BUSY_TIMEOUT_S.get() * 1000)


__all__ = ["CatalogError", "FencedOut", "NotFound", "Store"]


def _make_engine(db_path: Path, *, immediate: bool):
    busy_ms = busy_timeout_ms()
    engine = create_engine(f"sqlite:///{db_path}", connect_args={"timeout": busy_ms / 1000})

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn, _record):
        # Let us issue BEGIN ourselves (pysqlite's implicit BEGIN is always deferred).
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        cur.execute("pragma journal_mode=wal")
        cur.execute(f"pragma busy_timeout={busy_ms}")
        cur.execute("pragma foreign_keys=on")
        cur.execute("pragma synchronous=normal")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn):
        conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")

    return engine


def _make_postgres_engine(db):
    # READ COMMITTED: an UPDATE ... WHERE status = 'queued' that loses a race to another
    # daemon re-reads the row after the winner commits and matches nothing (one claim).
    # Timestamps are stored as UTC, whatever the server's time zone.
    return create_engine(
        db.sqlalchemy_url,
        pool_pre_ping=True,
        connect_args={"connect_timeout": backend.CONNECT_TIMEOUT_S, "options": "-c timezone=UTC"},
    )


class Store:
    """Reads and writes the catalog (``paths.catalog_db``, or the PostgreSQL database of
    MLXD_DATABASE_URL); migrates it on open."""

    def __init__(self, paths: Paths, *, migrate: bool = True):
        self.paths = paths
        paths.home.mkdir(parents=True, exist_ok=True)
        self.db_path = paths.catalog_db
        self.database = backend.database(paths)
        if self.database.is_postgres:
            self._read_engine = self._write_engine = _make_postgres_engine(self.database)
            if migrate:
                revision = schema.postgres_revision(self.database)  # unreachable: one line
                where = f"the catalog at {self.database.host}:{self.database.port}"
                schema.check_not_newer(revision, where)
                if revision != schema.HEAD_REVISION:
                    schema.upgrade(self._write_engine)
            return
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
        # SQLite creates its files 0644 whatever the umask: a group-shared home needs more.
        share_files(self.paths.home)

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

    # Lookups by reference, for the daemon's jobs and the writes that read a row first
    # (in their session). The rule of what a reference means is catalog/refs.py's, the one
    # the Reader follows too; read commands use the Reader.

    def _find(self, kind: refs.RefKind, ref: str | int, session: Session | None):
        with contextlib.ExitStack() as stack:
            s = session or stack.enter_context(self.read())
            return _lookup(s, kind, ref)

    def _resolve(self, kind: refs.RefKind, ref: str | int, session: Session | None):
        row = self._find(kind, ref, session)
        if row is None:
            raise refs.not_found(kind, ref)
        return row

    def resolve_model(self, ref: str | int, session: Session | None = None) -> Model:
        """A model by catalog name, id, folder path or pulled hub repo (catalog/refs.py)."""
        return self._resolve(refs.MODEL, ref, session)

    def find_model(self, ref: str | int) -> Model | None:
        return self._find(refs.MODEL, ref, None)

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

    def delete_model(self, model_id: int) -> None:
        """Remove a model's row and what only it gives meaning to; its prompt cache files
        go once that has committed (a rolled-back delete leaves every file in place)."""
        with self.write() as s:
            m = s.get(Model, model_id)
            if m is None:
                raise NotFound(f"model {model_id} not found")
            _delete_hub_rows(s, model_id)
            # Children keep existing; their lineage says which parent was removed.
            for child in s.exec(select(Model).where(Model.parent_id == model_id)):
                child.details = {
                    **(child.details or {}),
                    "parent_removed": {"id": m.id, "name": m.name, "source": m.source},
                }
                child.parent_id = None
                s.add(child)
            s.flush()
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
            # Its eval runs and their items go too; runs against it lose their base.
            mine = select(EvalRun.id).where(EvalRun.model_id == model_id)
            s.execute(update(EvalRun).where(EvalRun.base_run_id.in_(mine)).values(base_run_id=None))
            s.execute(delete(EvalItem).where(EvalItem.run_id.in_(mine)))
            s.execute(delete(EvalRun).where(EvalRun.model_id == model_id))
            s.execute(
                update(EvalRun).where(EvalRun.base_model_id == model_id).values(base_model_id=None)
            )
            # A sweep is a record about its base: without the base it means nothing.
            s.execute(delete(Sweep).where(Sweep.base_model_id == model_id))
            # Prompt caches are of this exact model: useless without it.
            cache_files = _delete_prompt_caches_of(s, model_id)
            _forget_finetune_base(s, model_id)
            s.execute(
                update(Job).where(Job.output_model_id == model_id).values(output_model_id=None)
            )
            s.delete(m)
        _unlink(cache_files)

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
        pool: str = "default",
    ) -> Job:
        """A queued job row, not enqueued, with no admission or placement (tests and
        benchmarks set up catalogs with it; commands go through ``mlxd.scheduling``). The
        row is written as every submit writes it (``jobrows.insert_jobs``)."""
        from mlxd.catalog.jobrows import NewJob, insert_jobs

        row = NewJob(
            kind=kind,
            params=params,
            pool=pool,
            priority=priority,
            after_job_id=after_job_id,
            timeout_s=timeout_s,
            max_attempts=max_attempts,
            submitted_by=_user(),
        )
        return self.get_job(insert_jobs(self.paths, [row])[0])

    def get_job(self, job_id: int) -> Job:
        with self.read() as s:
            job = s.get(Job, job_id)
            if job is None:
                raise refs.job_not_found(job_id)
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

    def claim_job(
        self, job_id: int, *, host: str, daemon_pid: int, lease_s: float | None = None
    ) -> Job | None:
        """Mark a queued job running; None if someone else has it or it is no longer queued.
        ``lease_s``: the claimer's lease, by which every other host judges the attempt."""
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
                    wait_code=None,
                    lease_s=lease_s,
                    error=None,
                    pid=None,
                    # The log lives in the home of the daemon that runs the job (on another
                    # host than the submitter's, with a shared PostgreSQL catalog).
                    log_path=str(self.paths.job_log(job_id)),
                )
            )
            if res.rowcount != 1:
                return None
            return s.get(Job, job_id)

    def update_job(self, job_id: int, **values: Any) -> None:
        with self.write() as s:
            s.execute(update(Job).where(Job.id == job_id).values(**values))

    # -- fenced writes: a running attempt's own ------------------------------------------
    #
    # A host writes a running job's row only while the row is still ``running`` on that
    # host in that attempt (the fencing token: host id + attempt, checked in the UPDATE's
    # own WHERE). A host frozen past its lease whose job was taken back by another
    # (``take_back``) gets FencedOut from every such write and discards its work.

    def update_running(self, job: Job, **values: Any) -> None:
        """Heartbeat, progress, the child's pid: only while ``job``'s attempt is running here."""
        with self.write() as s:
            self._fenced(s, job, values)

    def hold_job(self, job: Job, session: Session) -> None:
        """Lock ``job``'s row in ``session`` while its attempt is still running here (a
        take-back by another host then waits for this transaction, and matches nothing
        once it committed an end); FencedOut if it is no longer this attempt's."""
        self._fenced(session, job, {"heartbeat_at": utcnow()})

    @contextlib.contextmanager
    def running_write(self, fence: Job | None, session: Session | None = None) -> Iterator[Session]:
        """A write (in ``session``, or a new transaction) that, with ``fence`` (a running
        attempt's row as claimed), holds that job's row first (``hold_job``): FencedOut and
        nothing written once the attempt is no longer this host's. Without ``fence``: a
        plain write."""
        with contextlib.ExitStack() as stack:
            s = session or stack.enter_context(self.write())
            if fence is not None:
                self.hold_job(fence, s)
            yield s

    def _fenced(self, s: Session, job: Job, values: dict[str, Any]) -> None:
        res = s.execute(update(Job).where(*_fence(job)).values(**values))
        if res.rowcount != 1:
            raise _fenced_out(s, job)

    def give_back_job(self, job: Job, message: str) -> None:
        """This host stops running ``job`` through no fault of the job (its daemon stops):
        queued again, the attempt given back. Fenced like every write of a running attempt."""
        with self.write() as s:
            self._fenced(
                s,
                job,
                {
                    "status": "queued",
                    "attempts": max(job.attempts - 1, 0),
                    "pid": None,
                    "progress": 0.0,
                    "message": message,
                    "started_at": None,
                },
            )

    def append_job_log(self, job_id: int, host: str | None, attempt: int, text: str) -> None:
        """A piece of a job's log, for ``jobs logs`` on other hosts (see ``JobLog``).

        Stored only while no later attempt has claimed the job (its row still names this
        host and this attempt, or the one before when this host queued it again itself):
        a host that wakes up after its job was taken back ships nothing more."""
        from mlxd.catalog.models import JobLog

        with self.write() as s:
            res = s.execute(
                update(Job)
                .where(
                    Job.id == job_id,
                    _same_host(host),
                    Job.attempts.in_([attempt, attempt - 1]),
                )
                .values(log_path=Job.log_path)  # no change: the row's lock, held to commit
            )
            if res.rowcount != 1:
                raise _fenced_out(s, _Token(job_id, host, attempt))
            s.add(JobLog(job_id=job_id, host=host, attempt=attempt, text=text))

    def finish_job(
        self,
        job_id: int,
        status: str,
        *,
        error: str | None = None,
        session: Session | None = None,
        fence: Job | None = None,
        **values: Any,
    ) -> None:
        """End a job. With ``fence`` (the running attempt's row as claimed), only while that
        attempt is still running on its host; FencedOut otherwise."""
        assert status in FINISHED_STATUSES
        with contextlib.ExitStack() as stack:
            s = session or stack.enter_context(self.write())
            if error:
                error = error.strip().splitlines()[-1] if error.strip() else error
            values = dict(
                status=status, error=error, finished_at=utcnow(), pid=None, wait_code=None, **values
            )
            if fence is not None:
                assert fence.id == job_id
                self._fenced(s, fence, values)
                return
            s.execute(update(Job).where(Job.id == job_id).values(**values))

    def request_cancel(self, job_id: int) -> Job:
        """Cancel a queued job now, or ask the daemon to stop a running one."""
        with self.write() as s:
            job = s.get(Job, job_id)
            if job is None:
                raise refs.job_not_found(job_id)
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

    def fail_queued(self, job_id: int, reason: str) -> bool:
        """Fail a job only while it is still queued (fenced by its status); True if it was."""
        with self.write() as s:
            res = s.execute(
                update(Job)
                .where(Job.id == job_id, Job.status == "queued")
                .values(status="failed", error=reason, finished_at=utcnow())
            )
        return res.rowcount == 1

    # -- the team server's users (issue 20) ------------------------------------------------

    def add_api_user(
        self, name: str, role: str, token_sha256: str, created_by: str | None = None
    ) -> None:
        """A new server user: its name, role and the hash of its token (never the token)."""
        from sqlalchemy.exc import IntegrityError

        from mlxd.catalog.models import ApiUser

        try:
            with self.write() as s:
                if s.exec(select(ApiUser).where(ApiUser.name == name)).first() is not None:
                    raise CatalogError(f"a user named '{name}' already exists")
                s.add(
                    ApiUser(name=name, role=role, token_sha256=token_sha256, created_by=created_by)
                )
        except IntegrityError:  # two adds of one name at once
            raise CatalogError(f"a user named '{name}' already exists") from None

    def remove_api_user(self, name: str) -> bool:
        """Remove a server user (their token stops working at once); False if none."""
        from mlxd.catalog.models import ApiUser

        with self.write() as s:
            res = s.execute(delete(ApiUser).where(ApiUser.name == name))
        return res.rowcount == 1

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

    # -- what sweeps reuse ----------------------------------------------------------------

    def add_sweep(
        self, base_model_id: int, params: dict[str, Any], variants: list[dict[str, Any]]
    ) -> Sweep:
        with self.write() as s:
            sweep = Sweep(base_model_id=base_model_id, params=params, variants=variants)
            s.add(sweep)
            s.flush()
            return sweep

    def add_eval_run(self, run: EvalRun, items: list[dict[str, Any]], *, session: Session):
        """An eval run and its items (dicts of ``EvalItem`` fields), inside a job's
        finishing transaction; the run gets its id."""
        session.add(run)
        session.flush()
        session.add_all([EvalItem(run_id=run.id, **item) for item in items])
        session.flush()
        return run

    # -- reliability (issue 8) ---------------------------------------------------------

    def requeue_after_crash(self, job: Job, reason: str) -> None:
        """The job's own process crashed: queue it once more, keeping the reason (only while
        that attempt is still running on its host: fenced)."""
        with self.write() as s:
            self._fenced(
                s,
                job,
                dict(
                    status="queued",
                    pid=None,
                    pid_started_at=None,
                    progress=0.0,
                    started_at=None,
                    crashes=Job.crashes + 1,
                    crash_reason=reason,
                    message=f"running again after a crash: {reason}",
                ),
            )

    def requeue_after_interruption(self, job: Job, message: str) -> bool:
        """The daemon died during this job: not the job's fault, so no attempt is charged.

        False if the row is no longer as ``job`` read it (still running on that host in
        that attempt): it ended meanwhile, or another host took it back and runs it."""
        with self.write() as s:
            res = s.execute(update(Job).where(*_fence(job)).values(**_interrupted(message)))
            return res.rowcount == 1

    # -- prompt caches (issue 11) ---------------------------------------------------------

    def add_prompt_cache(self, cache: PromptCache, session: Session | None = None) -> PromptCache:
        with contextlib.ExitStack() as stack:
            s = session or stack.enter_context(self.write())
            if s.exec(select(PromptCache.id).where(PromptCache.name == cache.name)).first():
                raise CatalogError(f"a prompt cache named '{cache.name}' already exists")
            s.add(cache)
            s.flush()
            return cache

    def find_prompt_cache(self, ref: str | int) -> PromptCache | None:
        """A prompt cache by name, id, or the path of its file (catalog/refs.py)."""
        return self._find(refs.PROMPT_CACHE, ref, None)

    def resolve_prompt_cache(self, ref: str | int) -> PromptCache:
        return self._resolve(refs.PROMPT_CACHE, ref, None)

    def delete_prompt_cache(self, cache_id: int) -> None:
        """Remove a prompt cache's row, then (once that committed) its file."""
        with self.write() as s:
            c = s.get(PromptCache, cache_id)
            if c is None:
                raise NotFound(f"prompt cache {cache_id} not found")
            s.delete(c)
        _unlink([Path(c.path)])

    # -- hub snapshots (pulled models) ------------------------------------------------------

    def add_hub_snapshot(self, snapshot, files: list, session: Session | None = None):
        """Record where a model came from and every file's verified hash."""
        with contextlib.ExitStack() as stack:
            s = session or stack.enter_context(self.write())
            s.add(snapshot)
            s.flush()
            for f in files:
                f.snapshot_id = snapshot.id
                s.add(f)
            return snapshot

    def hub_snapshot(self, model_id: int):
        from mlxd.catalog.models import HubSnapshot

        with self.read() as s:
            return s.exec(select(HubSnapshot).where(HubSnapshot.model_id == model_id)).first()

    def hub_snapshots(self, repo_id: str | None = None) -> list:
        from mlxd.catalog.models import HubSnapshot

        with self.read() as s:
            q = select(HubSnapshot).order_by(HubSnapshot.id)
            if repo_id:
                q = q.where(HubSnapshot.repo_id == repo_id)
            return list(s.exec(q))

    def hub_files(self, snapshot_id: int) -> list:
        from mlxd.catalog.models import HubFile

        with self.read() as s:
            q = select(HubFile).where(HubFile.snapshot_id == snapshot_id).order_by(HubFile.path)
            return list(s.exec(q))

    # -- fine-tuning: adapters, their training rows, sweeps ----------------------------------

    def fused_from(self, adapter) -> list[Model]:
        """The catalog models fused from ``adapter`` (the lineage the fuse job records),
        newest first."""
        with self.read() as s:
            fused = s.exec(select(Model).where(Model.source == "fuse").order_by(Model.id.desc()))
            made = [(m, (m.details or {}).get("adapter") or {}) for m in fused]
        return [m for m, a in made if (a.get("id"), a.get("name")) == (adapter.id, adapter.name)]

    def resolve_adapter(self, ref: str | int, session: Session | None = None):
        """An adapter by catalog name, catalog id, or the path of its folder (catalog/refs.py)."""
        return self._resolve(refs.ADAPTER, ref, session)

    def find_adapter(self, ref: str | int):
        return self._find(refs.ADAPTER, ref, None)

    def update_adapter(
        self,
        adapter_id: int,
        session: Session | None = None,
        *,
        fence: Job | None = None,
        **values,
    ) -> None:
        """Change an adapter's row; with ``fence``, only while that running attempt holds
        its job (``running_write``)."""
        from mlxd.catalog.models import Adapter

        with self.running_write(fence, session) as s:
            s.execute(
                update(Adapter)
                .where(Adapter.id == adapter_id)
                .values(updated_at=utcnow(), **values)
            )

    def record_finetune_row(self, row, *, fence: Job | None = None) -> None:
        """Store a step (FinetuneStep) or evaluation (FinetuneEval) row, replacing the one of
        the same adapter and iteration (and split): a run resumed from a checkpoint reports
        the steps after it again, and the newest report is the one that counts. With
        ``fence`` (the training attempt), only while that attempt holds its job: a host
        woken after its fine-tune was taken back records no step (FencedOut)."""
        table = type(row)
        key = [table.adapter_id == row.adapter_id, table.iteration == row.iteration]
        if hasattr(table, "split"):
            key.append(table.split == row.split)
        with self.running_write(fence) as s:
            s.execute(delete(table).where(*key))
            s.add(row)

    def forget_finetune_rows_after(
        self, adapter_id: int, iteration: int, *, fence: Job | None = None
    ) -> int:
        """Remove the step and evaluation rows past ``iteration``: a run resumed from that
        checkpoint trains those steps again. The trained tokens at the checkpoint (the
        last step row at or before it) are returned for the resumed run to count on. With
        ``fence``: only while that running attempt holds its job."""
        from mlxd.catalog.models import FinetuneEval, FinetuneStep

        with self.running_write(fence) as s:
            for table in (FinetuneStep, FinetuneEval):
                s.execute(
                    delete(table).where(table.adapter_id == adapter_id, table.iteration > iteration)
                )
            last = s.exec(
                select(FinetuneStep)
                .where(FinetuneStep.adapter_id == adapter_id)
                .order_by(FinetuneStep.iteration.desc())
                .limit(1)
            ).first()
            return last.trained_tokens if last is not None else 0

    def claim_adapter(
        self, adapter_id: int, job_id: int, *, fence: Job | None = None
    ) -> int | None:
        """Make job ``job_id`` the one that trains the adapter, unless another queued or
        running job does: then that job's id is returned and nothing changes. With
        ``fence``: only while that running attempt holds its job."""
        from mlxd.catalog.models import Adapter

        with self.running_write(fence) as s:
            a = s.exec(select(Adapter).where(Adapter.id == adapter_id).with_for_update()).one()
            if a.job_id is not None and a.job_id != job_id:
                owner = s.get(Job, a.job_id)
                if owner is not None and owner.status in ("queued", "running"):
                    return owner.id
            s.execute(
                update(Adapter)
                .where(Adapter.id == adapter_id)
                .values(job_id=job_id, updated_at=utcnow())
            )
        return None

    def delete_adapter(self, adapter_id: int) -> None:
        """Remove an adapter's row with its step and evaluation rows (not its folder).

        Benchmark and quality runs measured with the adapter go with it, as a removed model's
        own runs go with the model (``delete_model``): without their adapter they would read
        as runs of the base alone."""
        from mlxd.catalog.models import Adapter, FinetuneEval, FinetuneStep

        with self.write() as s:
            a = s.get(Adapter, adapter_id)
            if a is None:
                raise NotFound(f"adapter {adapter_id} not found")
            s.execute(delete(FinetuneStep).where(FinetuneStep.adapter_id == adapter_id))
            s.execute(delete(FinetuneEval).where(FinetuneEval.adapter_id == adapter_id))
            run_ids = select(BenchRun.id).where(BenchRun.adapter_id == adapter_id)
            s.execute(delete(BenchTrial).where(BenchTrial.run_id.in_(run_ids)))
            s.execute(delete(BenchRun).where(BenchRun.adapter_id == adapter_id))
            s.execute(delete(QualityRun).where(QualityRun.adapter_id == adapter_id))
            s.delete(a)

    def add_finetune_sweep(self, sweep, session: Session | None = None):
        with contextlib.ExitStack() as stack:
            s = session or stack.enter_context(self.write())
            s.add(sweep)
            s.flush()
            return sweep

    # -- scale-out (issue 13): machines, leases across hosts, pools -----------------------

    def refile_models(self, old_host: str, new_host: str, folder: Path) -> list[str]:
        """File under ``new_host`` the models filed under ``old_host`` whose files are in
        ``folder`` (a home's models/, when its daemon takes a new host id); their names."""
        moved = []
        with self.write() as s:
            for m in s.exec(select(Model).where(Model.host == old_host)):
                if Path(m.path).resolve().is_relative_to(folder.resolve()):
                    m.host = new_host
                    s.add(m)
                    moved.append(m.name)
        return moved

    def machine_heartbeat(
        self,
        host_id: str,
        *,
        pools: Sequence[str],
        facts: dict[str, Any] | None = None,
        fact_updates: dict[str, Any] | None = None,
        **values: Any,
    ) -> None:
        """Write this host's machine row (insert or update): its pools, facts (or some of
        them: ``fact_updates``), heartbeat."""
        from mlxd.catalog.models import Machine

        with self.write() as s:
            m = s.get(Machine, host_id)
            if m is None:
                m = Machine(host_id=host_id)
            m.pools, m.heartbeat_at, m.stopped_at = list(pools), utcnow(), None
            if facts is not None:
                m.facts = facts
            if fact_updates:
                m.facts = {**(m.facts or {}), **fact_updates}  # a new dict: JSON is not tracked
            for k, v in values.items():
                setattr(m, k, v)
            s.add(m)

    def machine_stopped(self, host_id: str) -> None:
        from mlxd.catalog.models import Machine

        with self.write() as s:
            s.execute(update(Machine).where(Machine.host_id == host_id).values(stopped_at=utcnow()))

    def machines(self) -> list:
        from mlxd.catalog.models import Machine

        with self.read() as s:
            return list(s.exec(select(Machine).order_by(Machine.host_id)))

    def take_back(self, job: Job, message: str) -> bool:
        """Queue again a job whose host stopped beating, exactly once: the row changes only if it
        is still running on that host in that attempt (whoever updates it first wins; the
        others' UPDATE matches nothing). The next run is attempt + 1 (issue 13), so its
        partial folder and log never share a name with the lost host's run, which may still be
        writing to a shared volume. Like a dead daemon it counts as an interruption, not as
        the job's failure: only POISON_PILL_DEATHS of them in a row end the job."""
        with self.write() as s:
            res = s.execute(
                update(Job)
                .where(*_fence(job))
                .values(**{**_interrupted(message), "attempts": Job.attempts})
            )
            return res.rowcount == 1


def _user() -> str | None:
    try:
        return getpass.getuser()
    except Exception:  # no passwd entry in some containers
        return os.environ.get("USER")


# -- hub snapshots (pulled models) ------------------------------------------------------------


def _lookup(s: Session, kind: refs.RefKind, ref: str | int):
    """The row ``ref`` names, by the one rule of catalog/refs.py (as the Reader's ``_find``)."""
    from mlxd.catalog.models import Adapter

    table = {"model": Model, "adapter": Adapter, "promptcache": PromptCache}[kind.table]
    for column, value in refs.lookups(kind, ref):
        if column == refs.HUB:
            row = _hub_model(s, *value)
        else:
            q = select(table).where(getattr(table, column) == value).order_by(table.id)
            row = s.exec(q).first()
        if row is not None:
            return row
    return None


def _hub_model(s: Session, repo: str, rev: str) -> Model | None:
    """The newest pulled model of hub repo ``repo`` at revision ``rev`` (refs.py's match)."""
    from mlxd.catalog.models import HubSnapshot

    q = select(HubSnapshot).where(HubSnapshot.repo_id == repo).order_by(HubSnapshot.id.desc())
    for snap in s.exec(q):
        if refs.snapshot_matches(snap, rev):
            return s.get(Model, snap.model_id)
    return None


def _delete_hub_rows(s: Session, model_id: int) -> None:
    from mlxd.catalog.models import HubFile, HubSnapshot

    snap_ids = select(HubSnapshot.id).where(HubSnapshot.model_id == model_id)
    s.execute(delete(HubFile).where(HubFile.snapshot_id.in_(snap_ids)))
    s.execute(delete(HubSnapshot).where(HubSnapshot.model_id == model_id))


def _delete_prompt_caches_of(s: Session, model_id: int) -> list[Path]:
    """Delete a model's prompt cache rows in ``s``; their files, for after the commit."""
    files = []
    for cache in s.exec(select(PromptCache).where(PromptCache.model_id == model_id)):
        files.append(Path(cache.path))
        s.delete(cache)
    s.flush()
    return files


def _unlink(files: list[Path]) -> None:
    """Files whose rows a committed transaction deleted. Never inside the transaction: one
    that rolls back would leave rows naming files that are gone."""
    for f in files:
        f.unlink(missing_ok=True)


def _forget_finetune_base(s: Session, model_id: int) -> None:
    """A removed model's adapters stay (they name their base); its fine-tuning sweeps go."""
    from mlxd.catalog.models import Adapter, FinetuneSweep

    s.execute(update(Adapter).where(Adapter.base_model_id == model_id).values(base_model_id=None))
    sweep_ids = select(FinetuneSweep.id).where(FinetuneSweep.base_model_id == model_id)
    s.execute(update(Adapter).where(Adapter.sweep_id.in_(sweep_ids)).values(sweep_id=None))
    s.execute(delete(FinetuneSweep).where(FinetuneSweep.base_model_id == model_id))


@dataclass
class _Token:
    id: int
    host: str | None
    attempts: int


def _same_host(host: str | None):
    return Job.host.is_(None) if host is None else Job.host == host


def _fence(job) -> tuple:
    """The WHERE of a fenced write: the row still has the status (running), host and
    attempt that ``job`` (the row as claimed or read) has."""
    return (
        Job.id == job.id,
        Job.status == job.status,
        _same_host(job.host),
        Job.attempts == job.attempts,
    )


def _fenced_out(s: Session, job) -> FencedOut:
    """Why a fenced write matched nothing: who holds the job now."""
    row = s.exec(select(Job.host, Job.attempts, Job.status).where(Job.id == job.id)).first()
    if row is None:
        return FencedOut(job.id, job.attempts, None, None)
    host, attempts, status = row
    moved_on = host != job.host or attempts > job.attempts
    return FencedOut(job.id, job.attempts, host if moved_on else None, status)


def _interrupted(message: str) -> dict[str, Any]:
    """A running job queued again through no fault of its own (its daemon or host died): the
    attempt it was on is given back and counted as an interruption."""
    return {
        "status": "queued",
        "pid": None,
        "pid_started_at": None,
        "progress": 0.0,
        "started_at": None,
        "interruptions": Job.interruptions + 1,
        "attempts": Job.attempts - 1,
        "message": message,
    }
