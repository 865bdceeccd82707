"""Pulling models from the Hugging Face hub into the shared HF cache, verified byte for byte.

Plain functions around ``huggingface_hub`` (no mlx): the ``download`` job calls them in its
child process. Everything lands in the standard HF cache (``HF_HOME`` / ``HF_HUB_CACHE``),
shared with mlx-lm and ``hf download``; nothing is copied into ``MLXD_HOME``.

The hub client checks sizes only, so every file is hashed right after it arrives (while it
is still in the page cache) and compared with the hub's own hash: the LFS sha256 for weights,
the git blob id for small files. A bad file is deleted and fetched once more.

The token comes from ``HF_TOKEN`` or the hub's token file, read by ``huggingface_hub``
itself; mlxd never reads, stores or prints it.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from mlxd.vocab.fmt import size as human_bytes  # one byte format everywhere

# What the hub accepts as a repo id: "org/name", letters, digits, '-', '_', '.'; no "--" or
# "..", not ending in ".git" (huggingface_hub's validate_repo_id, without importing it).
_REPO_PART = r"[A-Za-z0-9](?:[A-Za-z0-9._-]{0,94}[A-Za-z0-9_-])?"
REPO_ID_RE = re.compile(rf"^{_REPO_PART}/{_REPO_PART}$")
REVISION_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/-]{0,199}$")
COMMIT_RE = re.compile(r"^[0-9a-f]{40}$")
REMOTE_CODE_SUFFIXES = (".py",)
PROGRESS_EVERY_S = 0.5


class HubError(ValueError):
    """A pull or push that cannot go on; the message is one line a user can act on."""


class HubRefError(ValueError):
    """A malformed REPO[@REVISION]."""


# -- names ------------------------------------------------------------------------------------


def parse_repo_ref(text: str) -> tuple[str, str | None]:
    """'org/name@rev' -> ('org/name', 'rev'); HubRefError with the reason if malformed."""
    repo_id, sep, revision = text.strip().partition("@")
    if (
        not REPO_ID_RE.match(repo_id)
        or "--" in repo_id
        or ".." in repo_id
        or (repo_id.endswith(".git"))
    ):
        raise HubRefError(
            f"invalid hub repo id '{text}': expected ORG/NAME[@REVISION] with letters, digits, "
            "'-', '_' or '.'"
        )
    if sep and (not revision or not REVISION_RE.match(revision) or ".." in revision):
        raise HubRefError(f"invalid revision '{revision}' in '{text}'")
    return repo_id, (revision or None)


def looks_like_repo_id(ref: str) -> bool:
    """Whether REF reads as a hub id rather than a catalog name or a local path."""
    if ref.startswith((".", "/", "~")) or Path(ref).expanduser().exists():
        return False
    try:
        parse_repo_ref(ref)
    except HubRefError:
        return False
    return True


def default_model_name(repo_id: str) -> str:
    """The catalog name of a pulled repo: its name without the org ('Qwen3-0.6B')."""
    name = re.sub(r"[^A-Za-z0-9._-]+", "-", repo_id.split("/", 1)[1]).strip("-.")
    return name if name and not name.isdigit() else f"hub-{name}"


# -- settings, read the way huggingface_hub reads them ------------------------------------


@dataclass
class HubSettings:
    endpoint: str
    cache_dir: Path
    offline: bool


def settings() -> HubSettings:
    """HF_ENDPOINT, HF_HUB_CACHE (from HF_HOME) and HF_HUB_OFFLINE, as the hub library sees them."""
    from huggingface_hub import constants

    return HubSettings(
        endpoint=constants.ENDPOINT,
        cache_dir=Path(constants.HF_HUB_CACHE).expanduser(),
        offline=bool(constants.HF_HUB_OFFLINE),
    )


def repo_folder(cache_dir: Path, repo_id: str) -> Path:
    """The repo's folder in the HF cache, named by the hub library's own rule."""
    from huggingface_hub.file_download import repo_folder_name

    return Path(cache_dir) / repo_folder_name(repo_id=repo_id, repo_type="model")


def remember_ref(cache_dir: Path, repo_id: str, revision: str, commit: str) -> None:
    """Write ``refs/REVISION`` -> commit, as the hub library does when it resolves a branch
    or tag: without it, ``snapshot_download(repo, local_files_only=True)``, mlx-lm offline
    and an offline ``mlxd pull`` cannot find a snapshot fetched by its commit. Nothing is
    written for a revision that is the commit itself."""
    from huggingface_hub.file_download import _cache_commit_hash_for_specific_revision

    _cache_commit_hash_for_specific_revision(str(repo_folder(cache_dir, repo_id)), revision, commit)


@dataclass
class HubEnvironment:
    """What a pull or push in this process would use: the endpoint, offline mode, and
    whether a token is present (never the token itself)."""

    endpoint: str
    token: bool
    offline: bool

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def environment() -> HubEnvironment:
    from huggingface_hub import get_token

    hs = settings()
    return HubEnvironment(hs.endpoint, get_token() is not None, hs.offline)


def environment_drift(daemon: dict[str, Any] | None, where: str) -> str | None:
    """One line when this process's hub environment differs from a daemon's (its machine
    row's ``facts["hub"]``): the job uses the daemon's, not the one the user sees."""
    if not daemon:
        return None
    here = environment()
    diffs = []
    if daemon.get("endpoint") != here.endpoint:
        diffs.append(f"HF_ENDPOINT {daemon.get('endpoint')} (here: {here.endpoint})")
    if bool(daemon.get("token")) != here.token:
        has = "has a hub token" if daemon.get("token") else "has no hub token"
        diffs.append(f"{has} (here: {'one' if here.token else 'none'})")
    if bool(daemon.get("offline")) != here.offline:
        was = int(bool(daemon.get("offline")))
        diffs.append(f"HF_HUB_OFFLINE={was} (here: {int(here.offline)})")
    if not diffs:
        return None
    return f"the daemon on {where} uses {'; '.join(diffs)}: the job uses the daemon's"


def cached_commit(cache_dir: Path, repo_id: str, revision: str | None) -> str | None:
    """The commit a revision points at in the cache (refs/), or the commit itself."""
    revision = revision or "main"
    folder = repo_folder(cache_dir, repo_id)
    if COMMIT_RE.match(revision):
        return revision if (folder / "snapshots" / revision).is_dir() else None
    ref = folder / "refs" / revision
    if ref.is_file():
        commit = ref.read_text().strip()
        return commit if (folder / "snapshots" / commit).is_dir() else None
    return None


def margin_bytes() -> int:
    from mlxd.vocab.settings import DISK_MARGIN_BYTES

    return DISK_MARGIN_BYTES.get()


# -- what a pull is about to fetch ------------------------------------------------------------


@dataclass
class RemoteFile:
    path: str
    size: int
    git_oid: str  # the git blob id (sha1 of "blob <size>\0" + bytes)
    lfs_sha256: str | None = None  # set for LFS files: the sha256 of the content

    @property
    def lfs(self) -> bool:
        return self.lfs_sha256 is not None


@dataclass
class Plan:
    """What pre-flight learned: the exact commit, the files to have, the model's config."""

    repo_id: str
    revision: str
    commit: str
    files: list[RemoteFile]
    config: dict[str, Any] = field(repr=False)
    missing_bytes: int = 0  # what is not in the cache yet
    offline: bool = False

    @property
    def total_bytes(self) -> int:
        return sum(f.size for f in self.files)


def _hub_errors(repo_id: str, revision: str | None, endpoint: str):
    """Map huggingface_hub's errors to one-line HubErrors."""
    import contextlib

    import httpx2  # huggingface_hub's own HTTP client
    from huggingface_hub.errors import (
        GatedRepoError,
        HfHubHTTPError,
        LocalEntryNotFoundError,
        OfflineModeIsEnabled,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    @contextlib.contextmanager
    def mapping():
        try:
            yield
        except GatedRepoError:
            raise HubError(
                f"{repo_id} is gated: accept its terms on the hub, then give the daemon a token "
                "with access (HF_TOKEN in its environment, or 'hf auth login')"
            ) from None
        except RevisionNotFoundError:
            raise HubError(f"revision '{revision}' not found in {repo_id}") from None
        except RepositoryNotFoundError:
            raise HubError(
                f"repo '{repo_id}' not found on {endpoint} (if it is private, give the daemon a "
                "token: HF_TOKEN)"
            ) from None
        except (OfflineModeIsEnabled, LocalEntryNotFoundError):
            if settings().offline:
                raise HubError(
                    f"offline (HF_HUB_OFFLINE=1) and {repo_id} is not in the HF cache"
                ) from None
            raise HubError(
                f"cannot fetch from {repo_id} at {endpoint} (network or hub error), and the HF "
                "cache does not have it"
            ) from None
        except (httpx2.ConnectError, httpx2.TimeoutException) as e:
            raise HubError(f"cannot reach the hub at {endpoint}: {type(e).__name__}") from None
        except HfHubHTTPError as e:
            status = e.response.status_code if e.response is not None else "?"
            raise HubError(f"the hub answered HTTP {status} for {repo_id}") from None

    return mapping()


def preflight(
    repo_id: str,
    revision: str | None,
    *,
    include: list[str] | None = None,
    exclude: list[str] | None = None,
    trust_remote_code: bool = False,
    model_check: Callable[[dict[str, Any]], str | None] | None = None,
) -> Plan:
    """Everything that can refuse a pull, before any weight moves.

    Fetches the repo info, the file list and config.json (and the safetensors index); raises
    HubError for a missing repo or revision, a gated repo without access, a glob matching
    nothing, remote code without ``trust_remote_code``, a model type ``model_check`` refuses,
    or not enough disk.
    """
    from huggingface_hub import HfApi, hf_hub_download
    from huggingface_hub.hf_api import RepoFile
    from huggingface_hub.utils import filter_repo_objects

    hs = settings()
    if hs.offline:
        plan = _offline_plan(repo_id, revision, include, exclude, hs)
        _check_model(
            repo_id, [f.path for f in plan.files], plan.config, trust_remote_code, model_check
        )
        return plan
    api = HfApi()
    with _hub_errors(repo_id, revision, hs.endpoint):
        info = api.model_info(repo_id, revision=revision)
        commit = info.sha
        tree = [
            f
            for f in api.list_repo_tree(repo_id, revision=commit, recursive=True)
            if isinstance(f, RepoFile)
        ]
    if not commit or not COMMIT_RE.match(commit):
        raise HubError(f"the hub gave no commit for {repo_id}@{revision or 'main'}")
    remote = {
        f.path: RemoteFile(f.path, f.size, f.blob_id, f.lfs.sha256 if f.lfs else None) for f in tree
    }
    chosen = list(
        filter_repo_objects(list(remote), allow_patterns=include, ignore_patterns=exclude)
    )
    if not chosen:
        globs = " ".join(
            [f"--include '{g}'" for g in include or []]
            + [f"--exclude '{g}'" for g in exclude or []]
        )
        raise HubError(f"no file of {repo_id} matches {globs or 'anything'}")
    if "config.json" not in remote:
        raise HubError(f"{repo_id} has no config.json: not a model mlxd can use")
    if "config.json" not in chosen:
        chosen.append("config.json")  # the model needs it whatever the globs say
    if not any(p.endswith(".safetensors") for p in chosen):
        raise HubError(f"no *.safetensors weights among the files chosen from {repo_id}")
    with _hub_errors(repo_id, revision, hs.endpoint):
        config_path = hf_hub_download(repo_id, "config.json", revision=commit)
        index = None
        if "model.safetensors.index.json" in remote:
            index = hf_hub_download(repo_id, "model.safetensors.index.json", revision=commit)
    try:
        config = json.loads(Path(config_path).read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise HubError(f"{repo_id}'s config.json is not valid JSON ({e})") from None
    if index is not None:
        shards = set(json.loads(Path(index).read_text()).get("weight_map", {}).values())
        left_out = sorted(shards - set(chosen))
        if left_out:
            raise HubError(f"the globs leave out weight shards {', '.join(left_out[:3])}")

    _check_model(repo_id, chosen, config, trust_remote_code, model_check)
    files = [remote[p] for p in chosen]
    plan = Plan(repo_id, revision or "main", commit, files, config)
    plan.missing_bytes = sum(f.size for f in files if not _in_cache(hs.cache_dir, repo_id, f))
    check_disk(hs.cache_dir, plan.missing_bytes)
    return plan


def _check_model(repo_id, paths, config, trust_remote_code, model_check) -> None:
    """Refuse remote code (unless trusted) and a model type the installed mlx-lm lacks."""
    code = sorted(p for p in paths if p.endswith(REMOTE_CODE_SUFFIXES))
    custom = config.get("auto_map") or config.get("model_file")
    if (code or custom) and not trust_remote_code:
        what = ", ".join(code[:3]) or "auto_map/model_file in config.json"
        raise HubError(
            f"{repo_id} ships its own modelling code ({what}); pass --trust-remote-code if you "
            "trust it"
        )
    if model_check is not None:
        reason = model_check(config)
        if reason:
            raise HubError(f"{repo_id}: {reason}")


def _offline_plan(repo_id, revision, include, exclude, hs: HubSettings) -> Plan:
    """Offline: the cache must already hold the snapshot; its files are checked by blob name."""
    from huggingface_hub.utils import filter_repo_objects

    commit = cached_commit(hs.cache_dir, repo_id, revision)
    if commit is None:
        raise HubError(
            f"offline (HF_HUB_OFFLINE=1) and {repo_id}@{revision or 'main'} is not in the HF cache"
        )
    snap = repo_folder(hs.cache_dir, repo_id) / "snapshots" / commit
    files = []
    for p in sorted(snap.rglob("*")):
        if not p.is_file():
            continue
        rel = p.relative_to(snap).as_posix()
        blob = Path(os.path.realpath(p)).name
        if len(blob) == 64:
            files.append(RemoteFile(rel, p.stat().st_size, "", blob))
        else:
            files.append(RemoteFile(rel, p.stat().st_size, blob, None))
    names = set(
        filter_repo_objects(
            [f.path for f in files], allow_patterns=include, ignore_patterns=exclude
        )
    ) | {"config.json"}
    files = [f for f in files if f.path in names]
    if not any(f.path == "config.json" for f in files):
        raise HubError(f"the cached snapshot of {repo_id} has no config.json")
    config = json.loads((snap / "config.json").read_text())
    return Plan(repo_id, revision or "main", commit, files, config, offline=True)


def check_disk(cache_dir: Path, needed: int) -> None:
    """HubError unless ``needed`` bytes plus the margin fit where the cache lives."""
    if needed <= 0:
        return
    where = Path(cache_dir)
    while not where.exists() and where != where.parent:
        where = where.parent
    free = shutil.disk_usage(where).free
    margin = margin_bytes()
    if needed + margin > free:
        raise HubError(
            f"not enough disk space: {human_bytes(needed)} to fetch plus a margin of "
            f"{human_bytes(margin)}, {human_bytes(free)} free at {cache_dir}"
        )


def _in_cache(cache_dir: Path, repo_id: str, f: RemoteFile) -> bool:
    blobs = repo_folder(cache_dir, repo_id) / "blobs"
    return (blobs / (f.lfs_sha256 or f.git_oid)).is_file()


# -- fetching and verifying -------------------------------------------------------------------


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


def hash_file(path: Path, lfs: bool) -> tuple[str, str | None]:
    """(sha256, git blob sha1 or None): one read; the git id only for non-LFS files."""
    sha = hashlib.sha256()
    git = None
    if not lfs:
        git = hashlib.sha1(b"blob %d\0" % path.stat().st_size)
    with open(path, "rb") as f:
        while chunk := f.read(4 << 20):
            sha.update(chunk)
            if git is not None:
                git.update(chunk)
    return sha.hexdigest(), (git.hexdigest() if git is not None else None)


TAIL_HASH_MIN_BYTES = 1 << 20  # smaller files are hashed right after, in one read


class _TailHasher(threading.Thread):
    """Hashes a blob while huggingface_hub writes it, by following its '.incomplete' file.

    huggingface_hub names the temporary file '<etag>.<random>.incomplete' in the repo's
    blobs folder and renames it into place when done; the open handle follows the rename.
    Whatever goes wrong (not found, truncated and restarted) only means ``hashes()`` gives
    None and the caller reads the file once more.
    """

    def __init__(self, blobs: Path, etag: str, size: int, lfs: bool):
        super().__init__(daemon=True)
        self.blobs, self.etag, self.size = blobs, etag, size
        self.sha = hashlib.sha256()
        self.git = None if lfs else hashlib.sha1(b"blob %d\0" % size)
        self.read_bytes = 0
        self.busy_s = 0.0
        self._downloaded = threading.Event()

    def finish(self) -> None:
        self._downloaded.set()
        self.join()

    def hashes(self) -> tuple[str, str | None] | None:
        if self.read_bytes != self.size:
            return None
        return self.sha.hexdigest(), (self.git.hexdigest() if self.git is not None else None)

    def run(self) -> None:
        fh = None
        try:
            while fh is None:
                found = sorted(self.blobs.glob(f"{self.etag}.*.incomplete"))
                if found:
                    try:
                        fh = open(found[0], "rb")
                    except FileNotFoundError:
                        continue
                elif self._downloaded.is_set():
                    return
                else:
                    time.sleep(0.005)
            idle_after_done = 0
            while self.read_bytes < self.size:
                chunk = fh.read(min(4 << 20, self.size - self.read_bytes))
                if chunk:
                    t = time.perf_counter()
                    self.sha.update(chunk)
                    if self.git is not None:
                        self.git.update(chunk)
                    self.busy_s += time.perf_counter() - t
                    self.read_bytes += len(chunk)
                elif self._downloaded.is_set():
                    idle_after_done += 1
                    if idle_after_done > 2:
                        return
                else:
                    time.sleep(0.005)
        except OSError:
            return
        finally:
            if fh is not None:
                fh.close()


def _mismatch(f: RemoteFile, sha256: str, git: str | None) -> str | None:
    if f.lfs_sha256 is not None:
        return None if sha256 == f.lfs_sha256 else f"sha256 {sha256[:12]}, hub {f.lfs_sha256[:12]}"
    if f.git_oid and git != f.git_oid:
        return f"git oid {git[:12] if git else '?'}, hub {f.git_oid[:12]}"
    return None


def clean_stale_partials(cache_dir: Path, repo_id: str) -> int:
    """Remove '.incomplete' files a killed download left, unless a live download holds them.

    huggingface_hub downloads each blob to a uniquely named temporary file under its lock;
    a process killed mid-file leaves that file behind (nothing can resume from it).
    """
    from filelock import FileLock, Timeout

    folder = repo_folder(cache_dir, repo_id)
    locks = Path(cache_dir) / ".locks" / folder.name
    removed = 0
    for tmp in (folder / "blobs").glob("*.incomplete"):
        etag = tmp.name.split(".", 1)[0]
        lock = FileLock(str(locks / f"{etag}.lock"), timeout=0)
        try:
            with lock:
                tmp.unlink(missing_ok=True)
                removed += 1
        except (Timeout, OSError):
            continue
    return removed


def pull(
    plan: Plan,
    *,
    progress: Callable[[Progress], None] = lambda p: None,
    max_workers: int = 8,
) -> PullResult:
    """Fetch the plan's files into the HF cache, verifying each; HubError naming a bad file."""
    from huggingface_hub import hf_hub_download

    hs = settings()
    started = time.monotonic()
    folder = repo_folder(hs.cache_dir, plan.repo_id)
    snapshot = folder / "snapshots" / plan.commit
    if not plan.offline:
        clean_stale_partials(hs.cache_dir, plan.repo_id)
    present = {f.path for f in plan.files if _in_cache(hs.cache_dir, plan.repo_id, f)}
    done_bytes = sum(f.size for f in plan.files if f.path in present)
    state = {"done": done_bytes, "fetched": 0, "current": set(), "hash_s": 0.0, "reread": 0}
    lock = threading.Lock()
    verified: dict[str, VerifiedFile] = {}
    refetched: list[str] = []

    def fetch(f: RemoteFile, force: bool = False) -> Path:
        with _hub_errors(plan.repo_id, plan.revision, hs.endpoint):
            local = hf_hub_download(
                plan.repo_id, f.path, revision=plan.commit, force_download=force
            )
        return Path(local)

    def one(f: RemoteFile) -> None:
        with lock:
            state["current"].add(f.path)
        try:
            cached = f.path in present
            tail = None
            if not cached and not plan.offline and f.size >= TAIL_HASH_MIN_BYTES:
                # Hash while the bytes arrive: follow the file huggingface_hub is writing.
                tail = _TailHasher(folder / "blobs", f.lfs_sha256 or f.git_oid, f.size, f.lfs)
                tail.start()
            try:
                local = snapshot / f.path if plan.offline else fetch(f)
            finally:
                if tail is not None:
                    tail.finish()
            if not local.is_file():
                raise HubError(f"{f.path} is missing from the cached snapshot of {plan.repo_id}")
            t = time.perf_counter()
            hashes = tail.hashes() if tail is not None else None
            if hashes is None or _mismatch(f, *hashes):
                # Not followed to the end (or the transfer restarted midway): one more read,
                # from the page cache since the file was just written.
                hashes = hash_file(local, f.lfs)
                with lock:
                    state["reread"] += 1 if not cached else 0
            sha, git = hashes
            with lock:
                state["hash_s"] += time.perf_counter() - t + (tail.busy_s if tail else 0.0)
            bad = _mismatch(f, sha, git)
            if bad and not plan.offline:
                _remove_cached(local)
                with lock:
                    refetched.append(f.path)
                local = fetch(f, force=True)
                cached = False
                sha, git = hash_file(local, f.lfs)
                bad = _mismatch(f, sha, git)
            if bad:
                _remove_cached(local)
                raise HubError(
                    f"{f.path} of {plan.repo_id} failed verification ({bad})"
                    + ("" if plan.offline else " twice; it was deleted")
                )
            with lock:
                verified[f.path] = VerifiedFile(f.path, f.size, sha, f.lfs)
                if not cached:
                    state["done"] += f.size
                    state["fetched"] += f.size
        finally:
            with lock:
                state["current"].discard(f.path)

    stop = threading.Event()

    def report() -> None:
        while not stop.wait(PROGRESS_EVERY_S):
            in_flight = _partial_bytes(folder)
            with lock:
                done = state["done"] + in_flight
                fetched = state["fetched"] + in_flight
                current = max(state["current"], key=_size_of(plan), default=None)
            elapsed = time.monotonic() - started
            progress(
                Progress(
                    min(done, plan.total_bytes),
                    plan.total_bytes,
                    fetched / elapsed if elapsed > 0 else 0.0,
                    current,
                )
            )

    reporter = threading.Thread(target=report, daemon=True)
    reporter.start()
    try:
        # Largest first: the long transfers start at once, small files fill the gaps.
        order = sorted(plan.files, key=lambda f: -f.size)
        with ThreadPoolExecutor(max_workers=max_workers) as pool:
            for fut in [pool.submit(one, f) for f in order]:
                fut.result()
    finally:
        stop.set()
        reporter.join()
    remember_ref(hs.cache_dir, plan.repo_id, plan.revision, plan.commit)
    elapsed = time.monotonic() - started
    progress(
        Progress(
            plan.total_bytes,
            plan.total_bytes,
            state["fetched"] / elapsed if elapsed > 0 else 0.0,
            None,
        )
    )
    return PullResult(
        repo_id=plan.repo_id,
        revision=plan.revision,
        commit=plan.commit,
        snapshot_path=str(snapshot),
        cache_dir=str(hs.cache_dir),
        endpoint=None if plan.offline else hs.endpoint,
        files=[verified[f.path] for f in sorted(plan.files, key=lambda f: f.path)],
        total_bytes=plan.total_bytes,
        fetched_bytes=state["fetched"],
        seconds=elapsed,
        refetched=refetched,
        hash_s=state["hash_s"],
        reread=state["reread"],
    )


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


def _size_of(plan: Plan) -> Callable[[str], int]:
    sizes = {f.path: f.size for f in plan.files}
    return lambda p: sizes.get(p, 0)


def _partial_bytes(repo_dir: Path) -> int:
    total = 0
    for tmp in (repo_dir / "blobs").glob("*.incomplete"):
        try:
            total += tmp.stat().st_size
        except OSError:
            pass
    return total


def _remove_cached(pointer: Path) -> None:
    """Delete a cached file: its blob and the snapshot's link to it."""
    blob = Path(os.path.realpath(pointer))
    blob.unlink(missing_ok=True)
    pointer.unlink(missing_ok=True)


# -- pushing ----------------------------------------------------------------------------------


@dataclass
class PushResult:
    repo_id: str
    revision: str
    commit: str | None
    commit_url: str | None
    files: int
    bytes: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# Files that mean nothing on the hub (an import record holds local paths). mlxd_synth.json
# goes: it marks random weights wherever the model lands.
PUSH_IGNORE = ("mlxd_import.json", ".DS_Store", "*.incomplete")


def push_folder(
    folder: Path,
    repo_id: str,
    *,
    card: str,
    private: bool = False,
    revision: str | None = None,
    message: str | None = None,
) -> PushResult:
    """Upload a model folder with ``card`` as its README.md, in one commit (upload_folder)."""
    import fnmatch
    import tempfile

    from huggingface_hub import HfApi

    hs = settings()
    if hs.offline:
        raise HubError("offline (HF_HUB_OFFLINE=1): cannot push")
    api = HfApi()
    folder = Path(folder)
    files = [
        p
        for p in sorted(folder.rglob("*"))
        if p.is_file()
        and p.name != "README.md"
        and not any(fnmatch.fnmatch(p.name, pat) for pat in PUSH_IGNORE)
    ]
    with _hub_errors(repo_id, revision, hs.endpoint), tempfile.TemporaryDirectory() as tmp:
        # One commit with the card: the model's files linked into a staging folder beside it.
        stage = Path(tmp)
        for p in files:
            target = stage / p.relative_to(folder)
            target.parent.mkdir(parents=True, exist_ok=True)
            os.symlink(p.resolve(), target)
        (stage / "README.md").write_text(card)
        api.create_repo(repo_id, private=private, exist_ok=True)
        if revision and revision != "main":
            api.create_branch(repo_id, branch=revision, exist_ok=True)
        info = api.upload_folder(
            folder_path=stage,
            repo_id=repo_id,
            revision=revision,
            commit_message=message or f"Upload {folder.name} with mlxd",
        )
    commit = getattr(info, "oid", None)
    return PushResult(
        repo_id=repo_id,
        revision=revision or "main",
        commit=commit,
        commit_url=getattr(info, "commit_url", None),
        files=len(files) + 1,
        bytes=sum(p.stat().st_size for p in files) + len(card.encode()),
    )
