"""Pulling models from the Hugging Face hub into the shared HF cache, verified byte for byte.

Plain functions around ``huggingface_hub`` (no mlx): the ``download`` job calls them in its
child process, after :func:`mlxd.hub.preflight.preflight` made the plan. Everything lands in
the standard HF cache (``HF_HOME`` / ``HF_HUB_CACHE``), shared with mlx-lm and
``hf download``; nothing is copied into ``MLXD_HOME``.

Every file is checked against the hub's own hash (:mod:`mlxd.hub.verify`); a bad file is
deleted and fetched once more.

The token comes from ``HF_TOKEN`` or the hub's token file, read by ``huggingface_hub``
itself; mlxd never reads, stores or prints it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from mlxd.hub.cache import (
    clean_stale_partials,
    has_blob,
    partial_bytes,
    remember_ref,
    remove_cached,
    repo_folder,
)
from mlxd.hub.environment import settings
from mlxd.hub.errors import HubError, hub_errors
from mlxd.hub.preflight import Plan, RemoteFile, preflight
from mlxd.hub.verify import TAIL_HASH_MIN_BYTES, TailHasher, hash_file, mismatch
from mlxd.reports.fmt import size as human_bytes  # one byte format everywhere

PROGRESS_EVERY_S = 0.5


@dataclass
class VerifiedFile:
    path: str
    size_bytes: int
    sha256: str
    lfs: bool


@dataclass
class PullResult:
    repo_id: str
    revision: str
    commit: str
    snapshot_path: str
    cache_dir: str
    endpoint: str | None
    files: list[VerifiedFile]
    total_bytes: int
    fetched_bytes: int  # what came over the network this time
    seconds: float
    refetched: list[str] = field(default_factory=list)  # files that failed a hash, fetched again
    hash_s: float = 0.0  # CPU time spent hashing, summed over files
    reread: int = 0  # fetched files hashed by a second read (not while they arrived)
    preflight_s: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Progress:
    done_bytes: int
    total_bytes: int
    rate_bytes_per_s: float
    current_file: str | None

    def line(self) -> str:
        rate = f" at {human_bytes(self.rate_bytes_per_s)}/s" if self.rate_bytes_per_s else ""
        cur = f", {self.current_file}" if self.current_file else ""
        return f"{human_bytes(self.done_bytes)} / {human_bytes(self.total_bytes)}{rate}{cur}"


# -- one pull: what it fixes at the start, and what its workers tally -------------------------


@dataclass(frozen=True)
class _Pull:
    """One pull's fixed facts: the plan, where the files go, what the cache held already."""

    plan: Plan
    cache_dir: Path
    endpoint: str
    folder: Path  # the repo's folder in the HF cache
    present: frozenset[str]  # paths of the plan whose blob was in the cache at the start
    started: float  # time.monotonic()

    @property
    def snapshot(self) -> Path:
        return self.folder / "snapshots" / self.plan.commit


@dataclass
class _Tally:
    """What the workers of one pull find, shared under its lock."""

    done: int  # bytes of the plan in the cache and verified (those already there count)
    fetched: int = 0  # bytes that came over the network
    hash_s: float = 0.0
    reread: int = 0
    current: set[str] = field(default_factory=set)  # files being fetched now
    verified: dict[str, VerifiedFile] = field(default_factory=dict)
    refetched: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def begin(self, path: str) -> None:
        with self.lock:
            self.current.add(path)

    def end(self, path: str) -> None:
        with self.lock:
            self.current.discard(path)

    def hashed(self, seconds: float, reread: bool) -> None:
        with self.lock:
            self.hash_s += seconds
            self.reread += int(reread)

    def refetching(self, path: str) -> None:
        with self.lock:
            self.refetched.append(path)

    def verified_file(self, v: VerifiedFile, fetched: bool) -> None:
        with self.lock:
            self.verified[v.path] = v
            if fetched:
                self.done += v.size_bytes
                self.fetched += v.size_bytes

    def progress(self, plan: Plan, in_flight: int, elapsed: float) -> Progress:
        """Where the pull stands, counting the bytes of the files still arriving."""
        sizes = {f.path: f.size for f in plan.files}
        with self.lock:
            done = self.done + in_flight
            fetched = self.fetched + in_flight
            current = max(self.current, key=lambda p: sizes.get(p, 0), default=None)
        return Progress(
            min(done, plan.total_bytes), plan.total_bytes, _rate(fetched, elapsed), current
        )


def _rate(nbytes: int, seconds: float) -> float:
    return nbytes / seconds if seconds > 0 else 0.0


# -- the pull ---------------------------------------------------------------------------------


def pull(
    plan: Plan,
    *,
    progress: Callable[[Progress], None] = lambda p: None,
    max_workers: int = 8,
) -> PullResult:
    """Fetch the plan's files into the HF cache, verifying each; HubError naming a bad file."""
    hs = settings()
    started = time.monotonic()
    if not plan.offline:
        clean_stale_partials(hs.cache_dir, plan.repo_id)
    p = _Pull(
        plan,
        hs.cache_dir,
        hs.endpoint,
        repo_folder(hs.cache_dir, plan.repo_id),
        frozenset(f.path for f in plan.files if has_blob(hs.cache_dir, plan.repo_id, f.blob)),
        started,
    )
    tally = _Tally(done=sum(f.size for f in plan.files if f.path in p.present))
    stop = threading.Event()
    reporter = threading.Thread(
        target=_report_progress, args=(p, tally, progress, stop), daemon=True
    )
    reporter.start()
    try:
        _have_all(p, tally, max_workers)
    finally:
        stop.set()
        reporter.join()
    remember_ref(hs.cache_dir, plan.repo_id, plan.revision, plan.commit)
    elapsed = time.monotonic() - started
    progress(Progress(plan.total_bytes, plan.total_bytes, _rate(tally.fetched, elapsed), None))
    return _result(p, tally, elapsed)


def _have_all(p: _Pull, tally: _Tally, max_workers: int) -> None:
    """Every file of the plan, on MAX_WORKERS threads; the first failure is raised."""
    # Largest first: the long transfers start at once, small files fill the gaps.
    order = sorted(p.plan.files, key=lambda f: -f.size)
    with ThreadPoolExecutor(max_workers=max_workers) as pool:
        for fut in [pool.submit(_have_file, p, f, tally) for f in order]:
            fut.result()


def _have_file(p: _Pull, f: RemoteFile, tally: _Tally) -> None:
    """One file in the cache and verified (fetched once more if its hash is wrong)."""
    tally.begin(f.path)
    try:
        cached = f.path in p.present
        local, sha, git = _fetch_and_hash(p, f, cached, tally)
        bad = mismatch(f, sha, git)
        if bad and not p.plan.offline:
            remove_cached(local)
            tally.refetching(f.path)
            local = _download(p, f, force=True)
            cached = False
            sha, git = hash_file(local, f.lfs)
            bad = mismatch(f, sha, git)
        if bad:
            remove_cached(local)
            raise HubError(
                f"{f.path} of {p.plan.repo_id} failed verification ({bad})"
                + ("" if p.plan.offline else " twice; it was deleted")
            )
        tally.verified_file(VerifiedFile(f.path, f.size, sha, f.lfs), fetched=not cached)
    finally:
        tally.end(f.path)


def _fetch_and_hash(
    p: _Pull, f: RemoteFile, cached: bool, tally: _Tally
) -> tuple[Path, str, str | None]:
    """The file's path in the snapshot and its hashes: taken while a large file arrives,
    else (or if that went wrong) by one read right after."""
    tail = None
    if not cached and not p.plan.offline and f.size >= TAIL_HASH_MIN_BYTES:
        # Hash while the bytes arrive: follow the file huggingface_hub is writing.
        tail = TailHasher(p.folder / "blobs", f.blob, f.size, f.lfs)
        tail.start()
    try:
        local = p.snapshot / f.path if p.plan.offline else _download(p, f)
    finally:
        if tail is not None:
            tail.finish()
    if not local.is_file():
        raise HubError(f"{f.path} is missing from the cached snapshot of {p.plan.repo_id}")
    t = time.perf_counter()
    hashes = tail.hashes() if tail is not None else None
    reread = False
    if hashes is None or mismatch(f, *hashes):
        # Not followed to the end (or the transfer restarted midway): one more read,
        # from the page cache since the file was just written.
        hashes = hash_file(local, f.lfs)
        reread = not cached
    tally.hashed(time.perf_counter() - t + (tail.busy_s if tail else 0.0), reread)
    return local, *hashes


def _download(p: _Pull, f: RemoteFile, force: bool = False) -> Path:
    from huggingface_hub import hf_hub_download

    with hub_errors(p.plan.repo_id, p.plan.revision, p.endpoint):
        local = hf_hub_download(
            p.plan.repo_id, f.path, revision=p.plan.commit, force_download=force
        )
    return Path(local)


def _report_progress(
    p: _Pull, tally: _Tally, progress: Callable[[Progress], None], stop: threading.Event
) -> None:
    """Every PROGRESS_EVERY_S until STOP: the bytes verified plus those arriving."""
    while not stop.wait(PROGRESS_EVERY_S):
        in_flight = partial_bytes(p.folder)
        progress(tally.progress(p.plan, in_flight, time.monotonic() - p.started))


def _result(p: _Pull, tally: _Tally, elapsed: float) -> PullResult:
    plan = p.plan
    return PullResult(
        repo_id=plan.repo_id,
        revision=plan.revision,
        commit=plan.commit,
        snapshot_path=str(p.snapshot),
        cache_dir=str(p.cache_dir),
        endpoint=None if plan.offline else p.endpoint,
        files=[tally.verified[f.path] for f in sorted(plan.files, key=lambda f: f.path)],
        total_bytes=plan.total_bytes,
        fetched_bytes=tally.fetched,
        seconds=elapsed,
        refetched=tally.refetched,
        hash_s=tally.hash_s,
        reread=tally.reread,
    )


# -- a model pulled on another host -----------------------------------------------------------


def fetch_pulled(
    repo_id: str,
    commit: str,
    *,
    include: list[str] | None = None,
    exclude: list[str] | None = None,
    expected: dict[str, str] | None = None,
    progress: Callable[[Progress], None] = lambda p: None,
) -> PullResult:
    """Have, on this machine, a model the catalog pulled elsewhere: the same commit and
    files, into this machine's HF cache, through the same pre-flight and verified
    :func:`pull` (a no-op for files already here). ``expected`` ({path: sha256}, what the
    first pull recorded) must match too. The model was accepted when it was first pulled:
    remote code and model type are not judged again."""
    plan = preflight(repo_id, commit, include=include, exclude=exclude, trust_remote_code=True)
    if plan.commit != commit:
        raise HubError(f"the hub gave commit {plan.commit[:12]} for {repo_id}@{commit[:12]}")
    result = pull(plan, progress=progress)
    for f in result.files:
        want = (expected or {}).get(f.path)
        if want is not None and want != f.sha256:
            raise HubError(
                f"{f.path} of {repo_id}@{commit[:12]} differs from the one pulled before "
                f"(sha256 {f.sha256[:12]}, the catalog has {want[:12]})"
            )
    missing = sorted(set(expected or {}) - {f.path for f in result.files})
    if missing:
        raise HubError(f"{repo_id}@{commit[:12]} lacks {', '.join(missing[:3])} pulled before")
    return result
