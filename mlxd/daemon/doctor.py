"""``mlxd doctor``: what is wrong with this home, what to do about it, and the safe fixes.

Each check returns Findings; ``--fix`` applies only fixes that cannot lose work: they run
while this process holds the daemon's lock (no daemon runs meanwhile), so nothing the fix
touches is in use.
"""

from __future__ import annotations

import fcntl
import json
import os
import platform
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from mlxd.config import Paths
from mlxd.daemon import control, hosts, reasons
from mlxd.scheduling.admission import free_bytes
from mlxd.scheduling.placement import DEFAULT_POOL, host_pool, serve_advice, unserved
from mlxd.vocab import settings


@dataclass
class Finding:
    check: str
    ok: bool
    detail: str
    advice: str | None = None  # what a person can do
    fix: Callable[[], str] | None = field(default=None, repr=False)  # the safe fix, if any
    fixed: str | None = None  # what the fix did, or why it was skipped or failed
    resolved: bool = False  # the fix ran and succeeded

    def as_dict(self) -> dict:
        return {
            "check": self.check,
            "ok": self.ok,
            "detail": self.detail,
            "advice": self.advice,
            "fixable": self.fix is not None,
            "fixed": self.fixed,
        }


def check_mlx() -> Finding:
    """Import mlx in a separate process: a broken install must not take the doctor down."""
    code = (
        "import json; from mlxd.engine.backend import backend_facts; "
        "print(json.dumps(backend_facts(), default=str))"
    )
    try:
        proc = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, timeout=120
        )
    except subprocess.TimeoutExpired:
        return Finding("mlx", False, "importing mlx took over 120 s", "check the installation")
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        return Finding(
            "mlx", False, f"mlx does not load: {last}", "pip install 'mlx[cpu]' (Linux) or mlx"
        )
    facts = json.loads(proc.stdout)
    detail = f"mlx {facts.get('mlx_version')}, backend {facts.get('backend')}"
    info = facts.get("device_info") or {}
    if facts.get("backend") == "metal":
        working_set = info.get("max_recommended_working_set_size")
        if working_set:
            detail += f", recommended working set {reasons.human_bytes(working_set)}"
        wired = _sysctl("iogpu.wired_limit_mb")
        if wired is not None:
            detail += ", wired limit " + ("system default" if wired == "0" else f"{wired} MB")
    elif platform.system() == "Darwin":
        return Finding(
            "mlx",
            False,
            detail + " (no Metal)",
            "run the daemon in a logged-in GUI session; Metal needs it",
        )
    return Finding("mlx", True, detail)


def _sysctl(name: str) -> str | None:
    try:
        out = subprocess.run(["sysctl", "-n", name], capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def check_disk(paths: Paths) -> Finding:
    """Free space where jobs write: MLXD_HOME, and its models and adapters folders when
    they are other file systems (a mount of their own); the fullest one is reported."""
    reserve = settings.DISK_RESERVE_BYTES.get()
    places = [p for p in (paths.home, paths.models, paths.home / "adapters") if p.exists()]
    free, where = min((free_bytes(p), p) for p in places or [paths.home])
    detail = f"{reasons.human_bytes(free)} free at {where}"
    if free < reserve:
        return Finding(
            "disk",
            False,
            f"disk full: {detail}, below the {reasons.human_bytes(reserve)} reserve",
            "free some space (mlxd models rm NAME --files, mlxd adapters rm NAME) before "
            "queueing more work",
        )
    return Finding("disk", True, detail)


def check_permissions(paths: Paths) -> Finding:
    from mlxd.system.permissions import is_shared, world_writable

    if not paths.home.exists():
        return Finding("permissions", True, "no home yet")
    shared = is_shared(paths.home)
    open_to_all = world_writable(paths.home)
    mode = "shared with its group (files made group-writable)" if shared else "private"
    if open_to_all:
        shown = ", ".join(str(p) for p in open_to_all[:3])
        more = f" and {len(open_to_all) - 3} more" if len(open_to_all) > 3 else ""

        def fix() -> str:
            for p in open_to_all:
                p.chmod(p.stat().st_mode & ~0o002)
            return f"removed write permission for others from {len(open_to_all)} path(s)"

        return Finding(
            "permissions",
            False,
            f"home {mode}; anyone may write {shown}{more}",
            "chmod o-w on them (nothing under MLXD_HOME should be world-writable)",
            fix=fix,
        )
    return Finding("permissions", True, f"home {mode}; nothing world-writable")


def check_postgres_catalog(db) -> Finding:
    """The catalog on PostgreSQL (MLXD_DATABASE_URL): reachable, and its schema revision."""
    from mlxd.catalog import schema
    from mlxd.catalog.errors import CatalogError

    where = f"PostgreSQL {db.display()}"
    try:
        revision = schema.postgres_revision(db)
        schema.check_not_newer(revision, f"the catalog at {db.host}:{db.port}")
    except CatalogError as e:
        return Finding("catalog", False, str(e), "check the server and MLXD_DATABASE_URL")
    if revision is None:
        return Finding("catalog", True, f"{where}, no catalog yet (made by the first command)")
    return _schema_finding(f"{where}, ", revision, "")


def _schema_finding(where: str, revision: str | None, healthy: str) -> Finding:
    from mlxd.catalog import schema

    if revision != schema.HEAD_REVISION:
        return Finding(
            "catalog",
            True,
            f"{where}schema {revision}, upgraded to {schema.HEAD_REVISION} by the next command",
        )
    return Finding("catalog", True, f"{where}schema {revision}{healthy}")


def check_catalog(paths: Paths) -> Finding:
    from mlxd.catalog import backend, schema

    pg = backend.database(paths)
    if pg.is_postgres:
        return check_postgres_catalog(pg)
    db = paths.catalog_db
    if not db.exists():
        return Finding("catalog", True, "no catalog yet (made by the first command that needs it)")
    try:
        integrity = backend.quick_check(db, timeout=10)
    except sqlite3.DatabaseError as e:
        return Finding("catalog", False, f"{db} is unreadable ({e})", f"restore {db} from a backup")
    revision = schema.current_revision(db)
    if integrity != "ok":
        return Finding(
            "catalog", False, f"integrity check failed: {integrity}", f"restore {db} from a backup"
        )
    return _schema_finding("", revision, ", integrity ok")


def check_queue(paths: Paths) -> Finding:
    from mlxd.catalog import backend

    if backend.database(paths).is_postgres:
        return Finding("queue", True, "PostgresHuey, in the catalog's database")
    db = paths.queue_db
    if not db.exists():
        return Finding("queue", True, "no queue file (rebuilt from the catalog at start)")
    try:
        integrity = backend.quick_check(db, timeout=10)
    except sqlite3.DatabaseError as e:
        integrity = str(e)
    if integrity == "ok":
        return Finding("queue", True, "integrity ok")
    from mlxd.daemon.queue import check_queue_file

    return Finding(
        "queue",
        False,
        f"{db} is corrupt ({integrity})",
        "the daemon sets it aside and rebuilds it from the catalog at start",
        fix=lambda: f"moved it to {check_queue_file(paths)}",
    )


def check_daemon(paths: Paths) -> Finding:
    st = control.status(paths)
    if not st.running:
        return Finding(
            "daemon", False, "not running", "start it with 'mlxd daemon start' to run queued jobs"
        )
    alive = control.alive_file(paths)
    try:
        age = time.time() - alive.stat().st_mtime
    except OSError:
        age = None
    limit = max(30.0, 5 * settings.HOUSEKEEPING_S.get())
    if age is None or age > limit:
        seen = "never" if age is None else f"{age:.0f} s ago"
        return Finding(
            "daemon",
            False,
            f"pid {st.pid} holds the lock but its housekeeping last ran {seen}",
            f"it may be stopped or hung: 'kill -CONT {st.pid}', or 'mlxd daemon stop' and start",
        )
    return Finding("daemon", True, f"running (pid {st.pid}), responsive {age:.0f} s ago")


def check_jobs(paths: Paths, store, daemon_running: bool) -> list[Finding]:
    from mlxd.catalog.models import utcnow
    from mlxd.daemon.liveness import process_alive
    from mlxd.daemon.recovery import reconcile_queue, unqueued_jobs

    out = []
    now = utcnow()
    stale_after = settings.LEASE_TIMEOUT_S.get() + 10
    orphaned, stale = [], []
    me = hosts.host_id()
    for job in store.list_jobs(["running"]):
        if job.host and job.host != me:
            continue  # another host's job: its daemons watch its heartbeat
        if not process_alive(job.daemon_pid, job.started_at):
            orphaned.append(job.id)
            continue
        beat = job.heartbeat_at
        if beat is not None and beat.tzinfo is None:
            beat = beat.replace(tzinfo=now.tzinfo)
        if beat is not None and (now - beat).total_seconds() > stale_after:
            stale.append(job.id)
    if orphaned:
        out.append(
            Finding(
                "running jobs",
                False,
                f"job(s) {_ids(orphaned)} are running but their daemon is gone",
                "start the daemon: it queues them again",
                fix=None if daemon_running else lambda: _requeue_orphans(store, paths, orphaned),
            )
        )
    if stale:
        out.append(
            Finding(
                "leases",
                False,
                f"job(s) {_ids(stale)} have not renewed their lease for over {stale_after:g} s",
                "the daemon may be hung: see 'mlxd jobs logs ID' and the daemon log",
            )
        )
    if not orphaned and not stale:
        out.append(Finding("running jobs", True, "every running job has a live supervisor"))

    # Every pool's queue, not only the default one: a job in pool 'gpu' is in huey's 'gpu'.
    queued = store.list_jobs(["queued"])
    try:
        missing = [j.id for j in unqueued_jobs(store, paths, grace_s=0.0)]
    except Exception as e:  # noqa: BLE001  a corrupt queue is reported by its own check
        out.append(Finding("queued jobs", False, f"the queue cannot be read ({e})"))
    else:
        if missing:
            out.append(
                Finding(
                    "queued jobs",
                    False,
                    f"job(s) {_ids(missing)} are queued in the catalog but not in the queue",
                    "a running daemon enqueues them within seconds; --fix does it now",
                    fix=lambda: f"enqueued job(s) {_ids(reconcile_queue(store, paths, 0.0))}",
                )
            )
        else:
            out.append(Finding("queued jobs", True, "every queued job is in the queue"))
    out += check_pools(store, queued, daemon_running)
    return out


def check_pools(store, queued, daemon_running: bool) -> list[Finding]:
    """Every pool that has queued jobs and no live daemon serving it: which jobs wait there,
    why (the words ``jobs list`` shows), and what to do."""
    from mlxd.catalog import backend

    local = None if backend.database(store.paths).is_postgres else daemon_running
    rows = store.machines()
    machines = hosts.seen_machines(rows, local_daemon=local)
    # One machine with its daemon stopped: the daemon check says so for the pools it serves.
    covered = (
        {DEFAULT_POOL, host_pool(hosts.host_id())}
        | {p for m in rows for p in [*(m.pools or []), host_pool(m.host_id)]}
        if local is False
        else set()
    )
    out = []
    for pool in sorted({j.pool for j in queued} - covered):
        why = unserved(pool, machines, settings.LEASE_TIMEOUT_S.get())
        if why is not None:
            ids = [j.id for j in queued if j.pool == pool]
            out.append(
                Finding(
                    f"pool {pool}",
                    False,
                    f"job(s) {_ids(ids)} wait: {why}",
                    serve_advice(pool),
                )
            )
    return out


def check_folders(paths: Paths, store, daemon_running: bool) -> list[Finding]:
    from mlxd.daemon.recovery import adopt_committed_folders, remove_partials
    from mlxd.daemon.runner import COMMIT_MARKER

    out = []
    partials = sorted(p.name for p in paths.partial.iterdir()) if paths.partial.exists() else []
    running = {f"job-{j.id}-attempt-{j.attempts}" for j in store.list_jobs(["running"])}
    leftover = [p for p in partials if p not in running]
    if leftover:
        out.append(
            Finding(
                "partial folders",
                False,
                f"{len(leftover)} unfinished output folder(s) in {paths.partial}",
                "left by jobs that died; removed at the next daemon start",
                fix=None
                if daemon_running
                else lambda: remove_partials(paths, running) or f"removed {len(leftover)}",
            )
        )
    known = {m.path for m in store.list_models()}
    orphans, committed = [], []
    if paths.models.exists():
        for folder in sorted(paths.models.iterdir()):
            if folder.name.startswith(".") or str(folder) in known:
                continue
            (committed if (folder / COMMIT_MARKER).exists() else orphans).append(folder)
    if committed:
        out.append(
            Finding(
                "uncommitted models",
                False,
                f"{len(committed)} finished folder(s) whose catalog commit was lost: "
                + ", ".join(f.name for f in committed),
                "the next daemon start adopts them (or removes them if their job is gone)",
                fix=None
                if daemon_running
                else lambda: f"adopted job(s) {_ids(adopt_committed_folders(store, paths))}",
            )
        )
    if orphans:
        out.append(
            Finding(
                "folders without rows",
                False,
                f"{len(orphans)} folder(s) in {paths.models} have no catalog row: "
                + ", ".join(f.name for f in orphans),
                "register with 'mlxd models add PATH' or delete them (not done by --fix)",
            )
        )
    missing = [m.name for m in store.list_models() if m.managed and not os.path.isdir(m.path)]
    if missing:
        out.append(
            Finding(
                "rows without folders",
                False,
                f"model(s) {', '.join(missing)} have no folder",
                "remove them with 'mlxd models rm NAME'",
            )
        )
    if not (leftover or committed or orphans or missing):
        out.append(Finding("model folders", True, "every folder has a row and every row a folder"))
    return out


def _requeue_orphans(store, paths: Paths, ids: list[int]) -> str:
    from mlxd.daemon.recovery import recover_orphaned_jobs

    recover_orphaned_jobs(store, paths, supervised=set)
    return f"queued job(s) {_ids(ids)} again"


def _ids(ids) -> str:
    return ", ".join(map(str, ids)) if ids else "none"


@contextmanager
def daemon_lock(paths: Paths) -> Iterator[bool]:
    """Hold the daemon's lock while fixing (True), or yield False when a daemon holds it."""
    paths.ensure()
    with open(paths.lockfile, "a+") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def diagnose(paths: Paths, *, mlx: bool = True) -> list[Finding]:
    findings = [check_mlx()] if mlx else []
    catalog = check_catalog(paths)
    findings += [check_disk(paths), check_permissions(paths), catalog, check_queue(paths)]
    findings.append(check_daemon(paths))
    from mlxd.catalog.backend import catalog_exists

    catalog_ok = catalog.ok and catalog_exists(paths)
    if catalog_ok and paths.home.exists():
        from mlxd.catalog.store import Store

        store = Store(paths)
        running = control.status(paths).running
        findings += check_jobs(paths, store, running)
        findings += check_folders(paths, store, running)
    return findings


def apply_fixes(paths: Paths, findings: list[Finding]) -> None:
    """Apply each safe fix, holding the daemon's lock (fixes that need no daemon only)."""
    with daemon_lock(paths) as held:
        for f in findings:
            if f.ok or f.fix is None:
                continue
            if not held and f.check not in ("queued jobs", "permissions"):
                f.fixed = "skipped: a daemon is running"
                continue
            try:
                f.fixed = f.fix() or "done"
                f.resolved = True
            except Exception as e:  # noqa: BLE001  report and go on
                f.fixed = f"failed: {e}"
