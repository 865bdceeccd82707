"""Running one job: claim it, start its child process, follow it, record the outcome.

The same code serves the daemon's worker threads and commands that run a job in the
foreground (``mlxd models synth``): a job always runs in a fresh child process.

In the daemon (``prewarm``) one spare child waits with mlx and mlx_lm already imported, so
the next job starts at once instead of paying ~1 s of imports. Each spare serves one job; the
next spare starts as soon as a job is handed over, or, for a measuring job (QUIET_KINDS),
as soon as that job's process has ended.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mlxd.catalog.models import utcnow
from mlxd.catalog.store import CatalogError, Store
from mlxd.config import Paths
from mlxd.jobs import UnknownJobKind, load_kind
from mlxd.jobs.base import FinishContext, JobFailed, SpecError
from mlxd.modelfolder import ModelFolderError

log = logging.getLogger("mlxd.runner")

POLL_S = 0.2  # how often the supervisor looks at cancel requests and the clock
PROGRESS_WRITE_S = 0.5  # at most this often a progress row is written
HEARTBEAT_S = 5.0  # at least this often the job's heartbeat_at is refreshed
KILL_GRACE_S = 3.0
CHILD_CMD = [sys.executable, "-m", "mlxd.daemon.child"]
# Jobs whose figures a spare's imports (~1 s of a CPU core) would disturb: their next spare
# starts only when they have ended. Others overlap it with their own work.
QUIET_KINDS = frozenset({"bench", "probe", "finetune"})
_FINISH_LOCK = threading.Lock()


@dataclass
class Outcome:
    status: str  # succeeded | failed | cancelled | requeued
    error: str | None = None


@dataclass
class Runner:
    store: Store
    paths: Paths
    # Set when the daemon is shutting down: the running job is stopped and re-queued.
    stop_event: threading.Event = field(default_factory=threading.Event)
    # Called with a job id that became runnable (a dependent whose prerequisite succeeded).
    release: Callable[[int], None] = lambda job_id: None
    # Keep one pre-started child waiting for the next job (the daemon; not in-CLI runs).
    prewarm: bool = False
    _spare: subprocess.Popen | None = field(default=None, init=False, repr=False)
    _spare_lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)
    _closed: bool = field(default=False, init=False, repr=False)

    def handle(self, job_id: int) -> Outcome | None:
        """Run job ``job_id`` if it is queued and its prerequisite allows; None otherwise."""
        try:
            job = self.store.get_job(job_id)
        except CatalogError:
            log.warning("job %s is not in the catalog; dropped", job_id)
            return None
        if job.status != "queued":
            return None
        if job.after_job_id is not None:
            pre = self.store.get_job(job.after_job_id)
            if pre.status in ("queued", "running"):
                return None  # released when the prerequisite finishes
            if pre.status != "succeeded":
                self.store.fail_dependents(pre.id)
                return Outcome("failed", "prerequisite failed")
        claimed = self.store.claim_job(job_id, host=socket.gethostname(), daemon_pid=os.getpid())
        if claimed is None:
            return None
        outcome = self._run(claimed)
        if outcome.status == "succeeded":
            for dep in self.store.dependents(job_id):
                self.release(dep.id)
        elif outcome.status in ("failed", "cancelled"):
            self.store.fail_dependents(job_id)
        return outcome

    # -- one attempt ----------------------------------------------------------------------

    def _run(self, job) -> Outcome:
        self.paths.ensure()
        log_path = Path(job.log_path or self.paths.job_log(job.id))
        with open(log_path, "a", buffering=1) as joblog:
            joblog.write(
                f"=== job {job.id} ({job.kind}) attempt {job.attempts} on {job.host} "
                f"at {utcnow():%Y-%m-%d %H:%M:%S} UTC\n"
            )
            outcome = self._attempt(job, joblog)
            joblog.write(
                f"=== {outcome.status}" + (f": {outcome.error}" if outcome.error else "") + "\n"
            )
        return outcome

    def _fail(self, job_id: int, error: str) -> Outcome:
        self.store.finish_job(job_id, "failed", error=error)
        return Outcome("failed", error)

    def _attempt(self, job, joblog) -> Outcome:
        try:
            kind = load_kind(job.kind)
            spec = kind.Spec.from_params(job.params)
            if getattr(kind, "PREPARE_WITH_JOB", False):
                inputs = kind.prepare(spec, self.store, job=job)
            else:
                inputs = kind.prepare(spec, self.store)
        except (UnknownJobKind, SpecError, CatalogError, JobFailed, ModelFolderError) as e:
            return self._fail(job.id, str(e.args[0]) if e.args else str(e))
        except TypeError as e:
            return self._fail(job.id, f"invalid parameters for a {job.kind} job ({e})")

        output_dir = None
        if getattr(kind, "PRODUCES_MODEL", False):
            output_dir = self.paths.partial / f"job-{job.id}-attempt-{job.attempts}"
            shutil.rmtree(output_dir, ignore_errors=True)
        request = {
            "job_id": job.id,
            "kind": job.kind,
            "params": job.params,
            "inputs": inputs,
            "output_dir": str(output_dir) if output_dir else None,
        }
        try:
            result, error, ended = self._supervise(job, request, joblog)
        except BaseException:  # Ctrl-C in a foreground run: nothing may stay "running"
            if output_dir:
                shutil.rmtree(output_dir, ignore_errors=True)
            self.store.finish_job(job.id, "cancelled", error="interrupted")
            self.store.fail_dependents(job.id)
            raise
        if ended in ("cancelled", "requeued") or error is not None or result is None:
            if output_dir:
                shutil.rmtree(output_dir, ignore_errors=True)
        if ended == "cancelled":
            self.store.finish_job(job.id, "cancelled", error="cancelled by user")
            return Outcome("cancelled", "cancelled by user")
        if ended == "requeued":
            # Not the job's fault: this attempt does not count against max_attempts.
            self.store.update_job(job.id, attempts=max(job.attempts - 1, 0))
            self.store.requeue_job(job.id, "the daemon stopped; the job will run again")
            return Outcome("requeued")
        if error is not None or result is None:
            return self._fail(job.id, error or "the job ended without a result")
        return self._finish(job, kind, spec, inputs, result, output_dir)

    def _finish(self, job, kind, spec, inputs, result, output_dir: Path | None) -> Outcome:
        # With several workers, two jobs may finish at once: one at a time, so neither takes
        # the other's fresh folder for a crash leftover.
        with _FINISH_LOCK:
            return self._finish_locked(job, kind, spec, inputs, result, output_dir)

    def _finish_locked(self, job, kind, spec, inputs, result, output_dir: Path | None) -> Outcome:
        final = None
        if output_dir is not None:
            final = self.paths.models / spec.name
            if final.exists():
                if self.store.find_model(str(final)) is not None:
                    shutil.rmtree(output_dir, ignore_errors=True)
                    return self._fail(job.id, f"a model folder already exists at {final}")
                # Left over from a crash between the rename and the catalog commit.
                shutil.rmtree(final)
            os.replace(output_dir, final)
        try:
            with self.store.write() as s:
                fin = FinishContext(self.store, s, job, final)
                kind.finish(spec, inputs, result, fin)
                self.store.finish_job(
                    job.id,
                    "succeeded",
                    session=s,
                    progress=1.0,
                    message="done",
                    result=fin.summary,
                    output_model_id=fin.output_model_id,
                )
        except Exception as e:  # the catalog refused the result: undo the folder move
            log.exception("recording the result of job %s failed", job.id)
            if final is not None:
                shutil.rmtree(final, ignore_errors=True)
            return self._fail(job.id, f"could not record the result: {e}")
        return Outcome("succeeded")

    # -- the spare child ------------------------------------------------------------------

    def start_spare(self) -> None:
        """Start a spare child (if prewarm is on and none is waiting)."""
        if not self.prewarm:
            return
        with self._spare_lock:
            if self._closed or self.stop_event.is_set():
                return
            if self._spare is not None and self._spare.poll() is None:
                return
            self.paths.ensure()
            # Until it has a job, what the spare prints (import warnings) goes to the daemon log.
            with open(self.paths.daemon_log, "a") as out:
                self._spare = subprocess.Popen(
                    [*CHILD_CMD, "--preload"],
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    stderr=out,
                    env=self._child_env(),
                    text=True,
                )
            log.info("spare child %s started", self._spare.pid)

    def close(self) -> None:
        """Stop the spare child; no new one is started after this."""
        with self._spare_lock:
            self._closed = True
            spare, self._spare = self._spare, None
        if spare is not None:
            _dismiss(spare)

    def _take_spare(self) -> subprocess.Popen | None:
        with self._spare_lock:
            spare, self._spare = self._spare, None
        if spare is not None and spare.poll() is not None:
            log.warning("spare child %s had exited (status %s)", spare.pid, spare.returncode)
            _dismiss(spare)
            return None
        return spare

    def _child_env(self) -> dict[str, str]:
        return dict(os.environ, MLXD_HOME=str(self.paths.home), PYTHONUNBUFFERED="1")

    def _start_child(self, request: dict[str, Any], joblog) -> subprocess.Popen:
        """Hand the request to the spare, or to a fresh child when there is none."""
        spare = self._take_spare() if self.prewarm else None
        if spare is not None:
            try:
                spare.stdin.write(json.dumps({**request, "log_path": joblog.name}))
                spare.stdin.close()
            except (BrokenPipeError, OSError):
                _dismiss(spare)  # it died just now: fall back to a fresh child
            else:
                if request["kind"] not in QUIET_KINDS:
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
        if self.prewarm and request["kind"] not in QUIET_KINDS:
            self.start_spare()  # there was none (first job, or it died): have one next time
        return proc

    # -- the child process ----------------------------------------------------------------

    def _supervise(self, job, request: dict[str, Any], joblog):
        """Run the child; returns (result, error, ended) with ended in done|cancelled|requeued."""
        proc = self._start_child(request, joblog)
        try:
            return self._follow_child(job, proc, joblog)
        except BaseException:
            _terminate(proc)
            raise

    def _follow_child(self, job, proc: subprocess.Popen, joblog):
        self.store.update_job(job.id, pid=proc.pid, message="started")
        events: queue.Queue = queue.Queue()

        def read_events():
            for line in proc.stdout:
                try:
                    events.put(json.loads(line))
                except json.JSONDecodeError:
                    joblog.write(line)
            events.put(None)

        reader = threading.Thread(target=read_events, daemon=True)
        reader.start()

        started = time.monotonic()
        result = error = None
        ended = "done"
        last_write = 0.0
        pending_progress: dict[str, Any] | None = None
        last_check = 0.0
        while True:
            try:
                ev = events.get(timeout=POLL_S)
            except queue.Empty:
                ev = False
            if ev is None:
                break
            if ev:
                kind = ev.get("event")
                if kind == "progress":
                    pending_progress = {"progress": ev["fraction"], "message": ev["message"]}
                elif kind == "result":
                    result = ev["result"]
                elif kind == "error":
                    error = ev["message"]
                elif kind == "timing":
                    # Where the child's time went: what benchmarks/run.py subtracts as work.
                    joblog.write(
                        f"=== child {proc.pid} ({'spare' if ev.get('spare') else 'fresh'}): "
                        f"imports {ev['imports_s']:.3f} s, idle {ev['idle_s']:.3f} s, "
                        f"work {ev['work_s']:.3f} s\n"
                    )
                elif kind is not None:
                    self._kind_event(job, ev)
            now = time.monotonic()
            if (pending_progress and now - last_write >= PROGRESS_WRITE_S) or (
                now - last_write >= HEARTBEAT_S  # a long step without progress still shows life
            ):
                self.store.update_job(job.id, heartbeat_at=utcnow(), **(pending_progress or {}))
                pending_progress, last_write = None, now
            if now - last_check >= POLL_S:
                last_check = now
                if self.stop_event.is_set():
                    ended = "requeued"
                elif job.timeout_s and now - started > job.timeout_s:
                    error = f"timed out after {job.timeout_s:g} s"
                elif self.store.get_job(job.id).cancel_requested:
                    ended = "cancelled"
                if ended != "done" or error:
                    _terminate(proc)
                    break
        rc = proc.wait()
        self.start_spare()  # (if prewarm) after a quiet job, or if none is waiting
        reader.join(timeout=5)
        # A stopped child may report last words (a fine-tuning checkpoint) after we stopped
        # reading: record those too.
        while True:
            try:
                ev = events.get_nowait()
            except queue.Empty:
                break
            if ev and ev.get("event") not in ("progress", "result", "error", "timing", None):
                self._kind_event(job, ev)
        if ended == "done" and error is None and rc != 0:
            error = _describe_exit(rc)
        return result, error, ended

    def _kind_event(self, job, ev: dict[str, Any]) -> None:
        """An event of the job's own kind (a fine-tuning step): its ``on_event`` records it."""
        handler = getattr(load_kind(job.kind), "on_event", None)
        if handler is None:
            return
        try:
            handler(self.store, job, ev)
        except Exception:  # a row that cannot be written must not stop the job
            log.exception("recording a %s event of job %s failed", ev.get("event"), job.id)


def _terminate(proc: subprocess.Popen) -> None:
    """SIGTERM, then SIGKILL: a long C call inside MLX may not notice a polite request."""
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(KILL_GRACE_S)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def _dismiss(proc: subprocess.Popen) -> None:
    """End a child that has no job (it may still be importing: do not wait for EOF)."""
    try:
        if proc.stdin and not proc.stdin.closed:
            proc.stdin.close()
    except OSError:
        pass
    _terminate(proc)
    if proc.stdout:
        proc.stdout.close()


def _describe_exit(rc: int) -> str:
    if rc < 0:
        sig = signal.Signals(-rc).name
        if sig == "SIGKILL":
            return "the job's process was killed (SIGKILL; out of memory?)"
        return f"the job's process crashed ({sig})"
    return f"the job's process exited with status {rc}"
