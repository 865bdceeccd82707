"""Running one job: claim it, start its child process, follow it, record the outcome.

The same code serves the daemon's worker threads and commands that run a job in the
foreground (``mlxd models synth``): a job always runs in a fresh child process.

In the daemon (``prewarm``) one spare child waits with mlx and mlx_lm already imported
(``spare.py``). The next spare starts as soon as a job is handed over, or, for a measuring
job (a kind's QUIET), as soon as that job's process has ended.

What keeps a job from being lost or stuck (issue 8):
- the child heartbeats on its pipe; a child that neither beats nor uses CPU for the lease
  timeout (stopped, deadlocked) is killed, and that counts as the job's own crash;
- the job's own crash is retried once with the reason kept, then fails;
- every job has a time limit (its kind's default unless ``--timeout``);
- a job writing models stops when the disk falls below the reserve, saying so;
- catalog writes that end a job are retried with backoff while the catalog is locked;
- the folder moved into models/ carries a commit marker with the result, so a daemon killed
  between the move and the catalog commit leaves something the next start adopts.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import queue
import shutil
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

from mlxd.catalog.models import utcnow
from mlxd.catalog.store import CatalogError, FencedOut, Store
from mlxd.config import Paths
from mlxd.daemon import faults, hosts, reasons
from mlxd.daemon.control import cancel_file
from mlxd.daemon.liveness import start_time
from mlxd.daemon.retry import (
    GaveUp,
    disk_full,
    retry_write,
    short_error,
    transient,
    try_write,
)
from mlxd.daemon.spare import CHILD_CMD, Spare, dismiss, terminate
from mlxd.formats.modelfolder import ModelFolderError
from mlxd.jobs import UnknownJobKind, load_kind
from mlxd.jobs.base import FinishContext, JobFailed
from mlxd.jobs.protocol import KIND_EVENTS, Event
from mlxd.scheduling import admission
from mlxd.scheduling.errors import DoesNotFit
from mlxd.scheduling.gate import fail_dependents, prerequisite_gate
from mlxd.vocab import settings
from mlxd.vocab.errors import SpecError
from mlxd.vocab.fmt import sig
from mlxd.vocab.outcomes import Code

log = logging.getLogger("mlxd.runner")

POLL_S = 0.2  # how often the supervisor looks at cancel requests and the clock
PROGRESS_WRITE_S = 0.5  # at most this often a progress row is written
HEARTBEAT_S = 5.0  # at least this often the job's heartbeat_at (its lease) is renewed
CPU_CHECK_S = 1.0
DISK_CHECK_S = 2.0
LOG_SHIP_S = 1.0  # how often a running job's new log lines reach a shared catalog
LOG_SHIP_MAX_BYTES = 1 << 20  # per write; a chattier log catches up over several
COMMIT_MARKER = ".mlxd-commit.json"
# A job whose own process crashed (signal, out of memory, no sign of life) runs once more.
CRASH_RETRIES = 1
_FINISH_LOCK = threading.Lock()


@dataclass
class Outcome:
    status: str  # succeeded | failed | cancelled | requeued | discarded (taken back)
    code: Code  # why, for a decision; ``error`` says it in words
    error: str | None = None


@dataclass
class ChildEnd:
    """How a child's run ended, before it is turned into a job status."""

    result: dict[str, Any] | None = None
    error: reasons.Failure | None = None  # the job's own error, or a limit it hit
    ended: str = "done"  # done | cancelled | requeued (the daemon is stopping)
    crash: reasons.Crash | None = None  # the process died of something not its own error


@dataclass
class _Following:
    """What the supervisor keeps about one running child (``Runner._follow_child``)."""

    proc: subprocess.Popen
    joblog: Any
    ident: dict[str, Any]  # the child's pid for the job's row, until a write records it
    output_path: Path | None  # where the job writes, named in a disk-full reason
    disk_path: Path | None  # watched for the disk reserve
    reserve: int
    memory_limit: int | None
    lease_s: float
    beat_s: float
    limit_s: float
    ps: psutil.Process | None
    events: queue.Queue = field(default_factory=queue.Queue)
    # Stamped by the reader thread on every line: a busy supervisor is no excuse.
    last_life: float = field(default_factory=time.monotonic)
    started: float = field(default_factory=time.monotonic)
    end: ChildEnd = field(default_factory=ChildEnd)
    pending_progress: dict[str, Any] | None = None
    cpu_seen: float = -1.0
    last_write: float = 0.0
    last_check: float = 0.0
    last_cpu: float = 0.0
    last_disk: float = 0.0
    write_after: float = 0.0

    def read_events(self) -> None:
        """The reader thread: protocol lines onto ``events`` (None at the end); anything
        else the child printed there goes to the job's log."""
        for line in self.proc.stdout:
            self.last_life = time.monotonic()
            try:
                self.events.put(json.loads(line))
            except json.JSONDecodeError:
                self.joblog.write(line)
        self.events.put(None)

    def note_cpu(self, now: float) -> None:
        """CPU time used since the last look counts as a sign of life (a deadlocked or
        stopped process uses none)."""
        if self.ps is None or now - self.last_cpu < CPU_CHECK_S:
            return
        self.last_cpu = now
        try:
            t = self.ps.cpu_times()
            cpu = t.user + t.system
        except psutil.Error:
            cpu = self.cpu_seen
        if cpu > self.cpu_seen:
            self.cpu_seen, self.last_life = cpu, max(self.last_life, now)

    def check_disk(self, now: float) -> None:
        if not self.reserve or now - self.last_disk < DISK_CHECK_S:
            return
        self.last_disk = now
        if admission.free_bytes(self.disk_path) < self.reserve:
            self.end.error = reasons.Failure(
                Code.DISK_FULL, reasons.disk_full(self.disk_path, self.reserve)
            )

    def judge_exit(self, rc: int) -> None:
        """A child that ended by itself with neither a result nor an error: why it died."""
        end = self.end
        if end.ended != "done" or end.error is not None or end.crash is not None:
            return
        if end.result is None and rc != 0:
            end.crash = reasons.describe_exit(
                rc,
                log_tail=reasons.log_tail(Path(self.joblog.name)),
                memory_limit=self.memory_limit,
                output_path=self.output_path,
            )
            if not end.crash.retryable:
                end.error = reasons.Failure(end.crash.code, end.crash.reason)
                end.crash = None


class LogShipper(threading.Thread):
    """Tails a job's log file into the catalog (``Store.append_job_log``) in whole lines."""

    def __init__(self, store: Store, job_id: int, host, attempt: int, path: Path, start: int):
        super().__init__(name=f"log-shipper-{job_id}", daemon=True)
        self.store, self.job_id, self.host, self.attempt = store, job_id, host, attempt
        self.path, self.offset = path, start
        self._stop_event = threading.Event()
        self.fenced = False  # a later attempt claimed the job: this one ships no more

    def run(self) -> None:
        while not self._stop_event.wait(LOG_SHIP_S):
            self.ship(final=False)

    def stop(self) -> None:
        self._stop_event.set()
        self.join(timeout=5)
        self.ship(final=True)

    def ship(self, final: bool) -> None:
        if self.fenced:
            return
        try:
            with open(self.path, "rb") as f:
                f.seek(self.offset)
                data = f.read(LOG_SHIP_MAX_BYTES)
        except OSError:
            return
        if not final:  # whole lines only, so no character is cut in two
            data = data[: data.rfind(b"\n") + 1]
        if not data:
            return
        text = data.decode("utf-8", errors="replace")
        try:
            shipped = try_write(
                lambda: self.store.append_job_log(self.job_id, self.host, self.attempt, text),
                what="ship the job log",
            )
        except FencedOut:  # taken back: the runner says so, in one line
            self.fenced, shipped = True, False
        except Exception:  # a copy of the log never fails the job; the file has it all
            log.exception("shipping the log of job %s failed", self.job_id)
            shipped = False
        if shipped:
            self.offset += len(data)


@dataclass
class Runner:
    store: Store
    paths: Paths
    # Set when the daemon is shutting down: the running job is stopped and re-queued.
    stop_event: threading.Event = field(default_factory=threading.Event)
    # Called with a job id that became runnable (a dependent, or a crashed job run again).
    release: Callable[[int], None] = lambda job_id: None
    # Keep one pre-started child waiting for the next job (the daemon; not in-CLI runs).
    prewarm: bool = False
    # Hears each progress event of the child (fraction, message): an in-CLI run shows them.
    on_progress: Callable[[float, str], None] | None = None
    spare: Spare = field(init=False, repr=False)
    _active: set[int] = field(default_factory=set, init=False, repr=False)
    _reserved: dict[int, int] = field(default_factory=dict, init=False, repr=False)
    _admit_lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)

    def __post_init__(self):
        self.spare = Spare(self.paths, self._child_env, enabled=self.prewarm)

    def active_jobs(self) -> set[int]:
        """The jobs this runner's workers are handling now (the housekeeper leaves them be)."""
        return set(self._active)

    def reserved_bytes(self) -> int:
        """The memory admission reserved for the jobs running now (their estimates)."""
        with self._admit_lock:
            return sum(self._reserved.values())

    def _write(self, fn: Callable[[], Any], what: str) -> Any:
        """A write that ends a job: retried while the catalog is locked or full."""
        return retry_write(fn, what=what, stop=self.stop_event)

    def handle(self, job_id: int) -> Outcome | None:
        """Run job ``job_id`` if it is queued and its prerequisite allows; None otherwise."""
        try:
            job = self.store.get_job(job_id)
        except CatalogError:
            log.warning("job %s is not in the catalog; dropped", job_id)
            return None
        if job.status != "queued":
            return None
        gate = self._write(lambda: prerequisite_gate(self.store, job), "prerequisite gate")
        if gate == "wait":
            return None  # released when the prerequisite finishes
        if gate == "failed":
            return Outcome("failed", Code.PREREQUISITE_FAILED, "prerequisite failed")
        admitted = self._admit(job)
        if admitted is not True:
            return admitted
        try:
            claimed = self._write(
                lambda: self.store.claim_job(
                    job_id,
                    host=hosts.host_id(),
                    daemon_pid=os.getpid(),
                    lease_s=settings.LEASE_TIMEOUT_S.get(),
                ),
                f"claim job {job_id}",
            )
            if claimed is None:
                return None
            try:
                outcome = self._run(claimed)
            except Exception as e:
                if isinstance(e, GaveUp) or transient(e):
                    raise
                outcome = self._internal_error(claimed)
        finally:
            with self._admit_lock:
                self._active.discard(job_id)
                self._reserved.pop(job_id, None)
        if outcome.status == "succeeded":
            try:
                for dep in self.store.dependents(job_id):
                    self.release(dep.id)
            except Exception as e:  # noqa: BLE001  the housekeeper enqueues them later
                if not transient(e):
                    raise
                log.warning("job %s: dependents not released yet (%s)", job_id, short_error(e))
        elif outcome.status in ("failed", "cancelled"):
            self._write(lambda: fail_dependents(self.store, job_id), "fail dependents")
        return outcome  # (discarded: the host that took the job back answers for it)

    def _admit(self, job) -> Outcome | None | bool:
        """True to run the job now (its memory reserved, and it is marked active: from here
        on housekeeping never takes it for unowned); None if it waits; an Outcome if refused."""
        try:
            est = admission.estimate(job.kind, job.params, self.store)
        except Exception:  # noqa: BLE001  an estimate is advice, never a reason to fail
            log.exception("job %s: no memory estimate", job.id)
            est = None
        with self._admit_lock:
            try:
                wait = admission.decide(est, sum(self._reserved.values()), self.paths.models)
            except DoesNotFit as e:
                wait, refused = None, str(e)
            else:
                refused = None
            if refused is None and wait is None:
                self._active.add(job.id)
                self._reserved[job.id] = est.memory_bytes if est else 0
                return True
        if refused is not None:
            try:  # only while it is still queued as read: not a run another host claimed
                self._write(
                    lambda: self.store.finish_job(job.id, "failed", error=refused, fence=job),
                    "refuse job",
                )
            except FencedOut:
                return None
            return Outcome("failed", Code.REFUSED, refused)
        if (job.message, job.wait_code) != (wait.reason, wait.code):
            try_write(
                lambda: self.store.update_job(
                    job.id, message=wait.reason, wait_code=wait.code.value
                ),
                what="waiting",
            )
        return None  # the housekeeper enqueues it again within seconds

    # -- one attempt ----------------------------------------------------------------------

    def _run(self, job) -> Outcome:
        self.paths.ensure()
        log_path = Path(job.log_path or self.paths.job_log(job.id))
        with open(log_path, "a", buffering=1) as joblog, self._shipping(job, log_path):
            history = "".join(
                f", after {n} {what}"
                for n, what in ((job.interruptions, "daemon stop(s)"), (job.crashes, "crash(es)"))
                if n
            )
            joblog.write(
                f"=== job {job.id} ({job.kind}) attempt {job.attempts}{history} on {job.host} "
                f"at {utcnow():%Y-%m-%d %H:%M:%S} UTC\n"
            )
            try:
                outcome = self._attempt(job, joblog)
            except FencedOut as e:
                outcome = self._discard(job, e)
            except GaveUp:
                # Stopping while the catalog refuses writes: the row still says running; the
                # next start recovers it (and adopts a committed-on-disk result).
                outcome = Outcome(
                    "requeued",
                    Code.CATALOG_LOCKED,
                    "the daemon stopped while the catalog was locked",
                )
            joblog.write(
                f"=== {outcome.status}" + (f": {outcome.error}" if outcome.error else "") + "\n"
            )
        return outcome

    @contextlib.contextmanager
    def _shipping(self, job, log_path: Path):
        """On a catalog shared between hosts (PostgreSQL), copy what this attempt adds to the
        job's log into the catalog every LOG_SHIP_S and once at the end, so that ``mlxd jobs
        logs`` works on any machine. The file here stays the original; on SQLite (one
        machine) nothing is copied."""
        if not self.store.database.is_postgres:
            yield
            return
        start = log_path.stat().st_size if log_path.exists() else 0
        shipper = LogShipper(self.store, job.id, job.host, job.attempts, log_path, start)
        shipper.start()
        try:
            yield
        finally:
            shipper.stop()

    def _fail(self, job, code: Code, error: str) -> Outcome:
        self._write(
            lambda: self.store.finish_job(job.id, "failed", error=error, fence=job), "fail job"
        )
        return Outcome("failed", code, error)

    def _internal_error(self, job) -> Outcome:
        """A bug in the supervisor while it ran ``job`` (the attempt as claimed): the job
        fails, fenced like every end of a running attempt (discarded if taken back)."""
        log.exception("job %s: unexpected error in the supervisor", job.id)
        try:
            return self._fail(job, Code.INTERNAL_ERROR, INTERNAL_ERROR)
        except FencedOut as e:
            return self._discard(job, e)

    def _partial_dir(self, job) -> Path:
        return self.paths.partial / f"job-{job.id}-attempt-{job.attempts}"

    def _discard(self, job, fenced: FencedOut) -> Outcome:
        """Another host took this attempt's job back (this one was frozen past its lease):
        whatever this attempt made is not recorded, and its partial folder goes."""
        shutil.rmtree(self._partial_dir(job), ignore_errors=True)
        log.warning("%s", fenced)
        return Outcome("discarded", Code.TAKEN_BACK, str(fenced))

    def _attempt(self, job, joblog) -> Outcome:
        try:
            kind = load_kind(job.kind)
            spec = kind.Spec.from_params(job.params)
            inputs = kind.prepare(spec, self.store, job)
        except (UnknownJobKind, SpecError, CatalogError, JobFailed, ModelFolderError) as e:
            if isinstance(e, FencedOut):
                raise
            return self._fail(job, Code.INVALID, str(e.args[0]) if e.args else str(e))
        except TypeError as e:
            return self._fail(job, Code.INVALID, f"invalid parameters for a {job.kind} job ({e})")
        except Exception as e:
            if not transient(e):
                raise
            # The catalog went away (a database restart): not the job's fault.
            log.warning("job %s: the catalog is unreachable before its start; queued again", job.id)
            return self._requeue(
                job,
                Code.CATALOG_UNREACHABLE,
                "the catalog was unreachable; the job will run again",
            )

        output_dir = None
        if kind.PRODUCES_MODEL:
            output_dir = self._partial_dir(job)
            shutil.rmtree(output_dir, ignore_errors=True)
        request = {
            "job_id": job.id,
            "kind": job.kind,
            "params": job.params,
            "inputs": inputs,
            "output_dir": str(output_dir) if output_dir else None,
        }
        # Where the job writes, watched for free space: its partial model folder, or the
        # folder a kind names (a fine-tune's checkpoints).
        writes_to = getattr(kind, "writes_to", None)
        watch = output_dir if output_dir is not None or writes_to is None else writes_to(inputs)
        try:
            end = self._supervise(job, request, joblog, output_dir, watch)
        except FencedOut:
            raise  # taken back by another host: discarded (_run)
        except BaseException:  # Ctrl-C in a foreground run: nothing may stay "running"
            if output_dir:
                shutil.rmtree(output_dir, ignore_errors=True)
            with contextlib.suppress(FencedOut):
                self.store.finish_job(job.id, "cancelled", error="interrupted", fence=job)
                fail_dependents(self.store, job.id)
            raise
        if end.ended != "done" or end.error is not None or end.result is None or end.crash:
            if output_dir:
                shutil.rmtree(output_dir, ignore_errors=True)
        if end.ended == "cancelled":
            self._write(
                lambda: self.store.finish_job(
                    job.id, "cancelled", error="cancelled by user", fence=job
                ),
                "cancel job",
            )
            cancel_file(self.paths, job.id).unlink(missing_ok=True)
            return Outcome("cancelled", Code.CANCELLED, "cancelled by user")
        if end.ended == "requeued":
            return self._requeue(
                job, Code.DAEMON_STOPPED, "the daemon stopped; the job will run again"
            )
        if end.crash is not None:
            return self._crashed(job, end.crash)
        if end.error is not None:
            return self._fail(job, end.error.code, end.error.reason)
        if end.result is None:
            return self._fail(job, Code.NO_RESULT, "the job ended without a result")
        return self._finish(job, kind, spec, inputs, end.result, output_dir)

    def _requeue(self, job, code: Code, message: str) -> Outcome:
        """Queue the job again; not the job's fault: this attempt does not count against
        max_attempts. (Its queue entry comes from the housekeeper or the next start.)"""
        self._write(lambda: self.store.give_back_job(job, message), "requeue job")
        return Outcome("requeued", code)

    def _crashed(self, job, crash: reasons.Crash) -> Outcome:
        """The job's own process died: run it once more, then fail with the reason."""
        if crash.retryable and job.crashes < CRASH_RETRIES:
            self._write(lambda: self.store.requeue_after_crash(job, crash.reason), "requeue job")
            log.warning("job %s crashed (%s); it will run once more", job.id, crash.reason)
            self.release(job.id)
            return Outcome("requeued", Code.CRASHED, crash.reason)
        if job.crashes:
            return self._fail(job, crash.code, f"{crash.reason} (again, after a retry)")
        return self._fail(job, crash.code, crash.reason)

    def _finish(self, job, kind, spec, inputs, result, output_dir: Path | None) -> Outcome:
        # With several workers, two jobs may finish at once: one at a time, so neither takes
        # the other's fresh folder for a crash leftover.
        with _FINISH_LOCK:
            return self._finish_locked(job, kind, spec, inputs, result, output_dir)

    def _finish_locked(self, job, kind, spec, inputs, result, output_dir: Path | None) -> Outcome:
        final = None
        if output_dir is not None:
            # Still this host's attempt? (One frozen past its lease may have lost it: then
            # nothing is moved into models/.) The commit below is fenced in any case.
            self._write(
                lambda: self.store.update_running(job, heartbeat_at=utcnow()), "renew the lease"
            )
            final = self.paths.models / spec.name
            if final.exists():
                if self.store.find_model(str(final)) is not None:
                    shutil.rmtree(output_dir, ignore_errors=True)
                    return self._fail(
                        job, Code.FOLDER_EXISTS, f"a model folder already exists at {final}"
                    )
                # Left over from a crash between the rename and the catalog commit.
                shutil.rmtree(final)
            write_commit_marker(output_dir, job, result)
            os.replace(output_dir, final)
            faults.reach("after-rename")
        try:
            self._write(
                lambda: commit_result(self.store, job, kind, spec, inputs, result, final),
                f"record the result of job {job.id}",
            )
        except GaveUp:
            raise  # the marker stays: the next start adopts the folder
        except FencedOut:  # taken back meanwhile: the folder moved here is not ours to keep
            if final is not None and _marked_by(final, job):
                shutil.rmtree(final, ignore_errors=True)
            raise
        except Exception as e:  # the catalog refused the result: undo the folder move
            log.exception("recording the result of job %s failed", job.id)
            if final is not None:
                shutil.rmtree(final, ignore_errors=True)
            if transient(e) and disk_full(e):
                return self._fail(job, Code.DISK_FULL, reasons.disk_full(self.paths.catalog_db))
            return self._fail(job, Code.NOT_RECORDED, f"could not record the result: {e}")
        if final is not None:
            (final / COMMIT_MARKER).unlink(missing_ok=True)
        return Outcome("succeeded", Code.SUCCEEDED)

    # -- the child process ----------------------------------------------------------------

    def start_spare(self) -> None:
        self.spare.start(self.stop_event)

    def close(self) -> None:
        """Stop the spare child; no new one is started after this."""
        self.spare.close()

    def _child_env(self) -> dict[str, str]:
        return dict(os.environ, **{settings.HOME.name: str(self.paths.home)}, PYTHONUNBUFFERED="1")

    def _start_child(self, request: dict[str, Any], joblog) -> subprocess.Popen:
        """Hand the request to the spare, or to a fresh child when there is none."""
        spare = self.spare.take() if self.prewarm else None
        if spare is not None:
            try:
                spare.stdin.write(json.dumps({**request, "log_path": joblog.name}))
                spare.stdin.close()
            except (BrokenPipeError, OSError):
                dismiss(spare)  # it died just now: fall back to a fresh child
            else:
                if not _quiet(request["kind"]):
                    self.start_spare()  # the next job gets a warm child too
                return spare
        proc = subprocess.Popen(
            CHILD_CMD,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=joblog,
            env=self._child_env(),
            text=True,
        )
        try:
            proc.stdin.write(json.dumps(request))
            proc.stdin.close()
        except BrokenPipeError:
            pass
        if self.prewarm and not _quiet(request["kind"]):
            self.start_spare()  # there was none (first job, or it died): have one next time
        return proc

    def _supervise(self, job, request: dict[str, Any], joblog, output_dir: Path | None, watch=None):
        oom_before = reasons.cgroup_oom_kills()
        proc = self._start_child(request, joblog)
        try:
            end = self._follow_child(job, proc, joblog, output_dir, watch)
        except BaseException:
            terminate(proc)
            raise
        if end.crash is not None and proc.returncode == -9 and oom_before is not None:
            oom_after = reasons.cgroup_oom_kills() or 0
            if oom_after > oom_before and end.crash.code is not Code.HUNG:
                end.crash = reasons.killed_by_kernel_oom()
        return end

    def _follow_child(
        self, job, proc: subprocess.Popen, joblog, output_dir: Path | None, watch=None
    ) -> ChildEnd:
        """Follow the child to its end. ``watch`` is where it writes (default: the models
        folder, for a partial model in ``output_dir``): below the disk reserve there, the
        job stops with "disk full: PATH has N free"."""
        f = self._following(job, proc, joblog, output_dir, watch)
        reader = threading.Thread(target=f.read_events, daemon=True)
        reader.start()
        while True:
            try:
                ev = f.events.get(timeout=POLL_S)
            except queue.Empty:
                ev = False
            if ev is None:
                break
            if ev:
                self._on_event(job, f, ev)
            now = time.monotonic()
            f.note_cpu(now)
            alive = now - f.last_life < f.lease_s
            self._renew_lease(job, f, now, alive)
            f.check_disk(now)
            if now - f.last_check >= POLL_S:
                f.last_check = now
                if self._should_end(job, f, now, alive):
                    terminate(proc)
                    break
        rc = proc.wait()
        self.start_spare()  # (if prewarm) after a quiet job, or if none is waiting
        reader.join(timeout=5)
        self._last_words(job, f.events)
        f.judge_exit(rc)
        return f.end

    def _following(
        self, job, proc: subprocess.Popen, joblog, output_dir: Path | None, watch
    ) -> _Following:
        """Record the child on the job's row and set up what following it needs."""
        ident = {"pid": proc.pid, "pid_started_at": start_time(proc.pid), "message": "started"}
        # A fenced write (FencedOut: the job was taken back) ends the child (_supervise).
        if try_write(lambda: self.store.update_running(job, **ident), what="record the child"):
            ident = {}
        disk_path = self.paths.models if output_dir is not None else watch
        try:
            ps = psutil.Process(proc.pid)
        except psutil.Error:
            ps = None
        return _Following(
            proc=proc,
            joblog=joblog,
            ident=ident,
            output_path=output_dir or watch,
            disk_path=disk_path,
            reserve=settings.DISK_RESERVE_BYTES.get() if disk_path is not None else 0,
            memory_limit=settings.JOB_MEMORY_LIMIT_BYTES.get(),
            lease_s=settings.LEASE_TIMEOUT_S.get(),
            beat_s=job_heartbeat_s(),
            limit_s=time_limit_s(job.kind, job.timeout_s),
            ps=ps,
        )

    def _on_event(self, job, f: _Following, ev: dict[str, Any]) -> None:
        """One protocol line from the child (``jobs/protocol.py``)."""
        try:
            event = Event(ev.get("event"))
        except ValueError:
            log.warning("job %s: its child sent an unknown event %r", job.id, ev.get("event"))
            return
        if event is Event.PROGRESS:
            f.pending_progress = {"progress": ev["fraction"], "message": ev["message"]}
            if self.on_progress is not None:
                self.on_progress(ev["fraction"], ev["message"])
        elif event is Event.RESULT:
            f.end.result = ev["result"]
        elif event is Event.ERROR:
            f.end.error = reasons.describe_error(
                ev["message"], output_path=f.output_path, memory_limit=f.memory_limit
            )
        elif event is Event.TIMING:
            # Where the child's time went: what benchmarks/run.py subtracts as work.
            f.joblog.write(
                f"=== child {f.proc.pid} ({'spare' if ev.get('spare') else 'fresh'}): "
                f"imports {ev['imports_s']:.3f} s, idle {ev['idle_s']:.3f} s, "
                f"work {ev['work_s']:.3f} s\n"
            )
        elif event in KIND_EVENTS:
            self._kind_event(job, ev)
        # (BEAT: the reader thread already stamped the child's life.)

    def _renew_lease(self, job, f: _Following, now: float, alive: bool) -> None:
        """Write the job's heartbeat (its lease) with any pending progress: at most every
        PROGRESS_WRITE_S with progress, at least every beat_s without; never for a child
        that shows no sign of life (its lease runs out)."""
        if not alive or now < f.write_after:
            return
        due = now - f.last_write >= f.beat_s
        if not due and not (f.pending_progress and now - f.last_write >= PROGRESS_WRITE_S):
            return
        values = {**f.ident, "heartbeat_at": utcnow(), **(f.pending_progress or {})}
        if try_write(lambda: self.store.update_running(job, **values), what="heartbeat"):
            f.pending_progress, f.ident = None, {}
        else:  # a locked catalog: keep following the child, try again later
            f.write_after = time.monotonic() + f.beat_s
        f.last_write = now

    def _should_end(self, job, f: _Following, now: float, alive: bool) -> bool:
        """Whether the child must be ended now: the daemon stops, it hung, it ran out of
        time, the user cancelled, or it already reported an error or hit a limit."""
        end = f.end
        if self.stop_event.is_set():
            end.ended = "requeued"
        elif not alive:
            end.crash = reasons.hung(f.lease_s)
        elif now - f.started > f.limit_s:
            end.error = reasons.Failure(Code.TIMED_OUT, f"timed out after {sig(f.limit_s, 6)} s")
        elif self._cancel_requested(job.id):
            end.ended = "cancelled"
        return bool(end.ended != "done" or end.error or end.crash)

    def _last_words(self, job, events: queue.Queue) -> None:
        """A stopped child may report last words (a fine-tuning checkpoint) after the
        supervisor stopped reading: record those too."""
        while True:
            try:
                ev = events.get_nowait()
            except queue.Empty:
                break
            if ev and ev.get("event") in KIND_EVENTS:
                self._kind_event(job, ev)

    def _cancel_requested(self, job_id: int) -> bool:
        if cancel_file(self.paths, job_id).exists():
            return True
        try:
            return bool(self.store.get_job(job_id).cancel_requested)
        except Exception as e:  # noqa: BLE001  a slow catalog: look again next time
            if not transient(e):
                raise
            return False

    def _kind_event(self, job, ev: dict[str, Any]) -> None:
        """An event of the job's own kind (a fine-tuning step): its ``on_event`` records it."""
        handler = getattr(load_kind(job.kind), "on_event", None)
        if handler is None:
            return
        try:
            handler(self.store, job, ev)
        except FencedOut:
            raise  # taken back by another host: the child is ended, the attempt discarded
        except Exception:  # a row that cannot be written must not stop the job
            log.exception("recording a %s event of job %s failed", ev.get("event"), job.id)


INTERNAL_ERROR = "internal error; see the daemon log"


def job_heartbeat_s() -> float:
    """How often a running job's row is renewed (its lease): every HEARTBEAT_S, or a third
    of a shorter lease, so that three missed beats make a job's host dead (hosts.py)."""
    return min(HEARTBEAT_S, settings.LEASE_TIMEOUT_S.get() / 3)


def write_commit_marker(folder: Path, job, result: dict[str, Any]) -> None:
    """What the next start needs to adopt this folder if the catalog commit is lost."""
    marker = {
        "job_id": job.id,
        "attempt": job.attempts,
        "host": job.host,
        "kind": job.kind,
        "result": result,
    }
    (folder / COMMIT_MARKER).write_text(json.dumps(marker, default=str))


def _marked_by(folder: Path, job) -> bool:
    """Whether ``folder``'s commit marker is this attempt's (not another host's on a shared
    volume)."""
    marker = read_commit_marker(folder) or {}
    return (marker.get("job_id"), marker.get("attempt"), marker.get("host")) == (
        job.id,
        job.attempts,
        job.host,
    )


def read_commit_marker(folder: Path) -> dict[str, Any] | None:
    try:
        return json.loads((folder / COMMIT_MARKER).read_text())
    except (OSError, ValueError):
        return None


def commit_result(store: Store, job, kind, spec, inputs, result, final: Path | None) -> None:
    """Record a job's result and mark it succeeded, in one transaction, only while the job's
    row is still as ``job`` read it (this host's running attempt): fenced, FencedOut else."""
    # The job's row held first: a taken-back job records nothing (no model, no run).
    with store.running_write(job) as s:
        fin = FinishContext(store, s, job, final)
        kind.finish(spec, inputs, result, fin)
        store.finish_job(
            job.id,
            "succeeded",
            session=s,
            fence=job,
            progress=1.0,
            message="done",
            result=fin.summary,
            output_model_id=fin.output_model_id,
        )
        if fin.output_model_id is not None:
            # Where the files are: this host, unless they are on the shared volume. A model
            # the job made elsewhere (a pull into this host's HF cache) counts too; one it
            # only found (a pull of a commit already in the catalog) keeps its host.
            from mlxd.catalog.models import Model

            model = s.get(Model, fin.output_model_id)
            if final is not None or model.created_by_job_id == job.id:
                model.host = hosts.model_host_for(final or model.path)
                s.add(model)


def _quiet(kind_name: str) -> bool:
    """Jobs whose figures a spare's imports (~1 s of a CPU core) would disturb: their next
    spare starts only when they have ended. Others overlap it with their own work."""
    try:
        return load_kind(kind_name).QUIET
    except UnknownJobKind:
        return False


def time_limit_s(kind: str, requested: float | None) -> float:
    """The job's time limit: what was asked for, else its kind's ``TIME_LIMIT_S``. Generous:
    a limit is there to free the queue from a job that will never end, not to judge a slow one."""
    if requested:
        return requested
    return float(load_kind(kind).TIME_LIMIT_S)
