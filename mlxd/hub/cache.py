"""The HF cache as mlxd sees it: its folders and refs, what is there, disk use, deletes.

Folder names and refs follow the hub library's own rules (``repo_folder_name``, its ref
writer). Scans and deletes of whole revisions go through its cache scanner
(``scan_cache_dir``) and delete strategy, so mlxd never removes a folder by hand in a cache it
shares with mlx-lm and ``hf download``; a pull removes only single files it failed to verify
and the partial files a killed download left.
"""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mlxd.hub.names import COMMIT_RE

SHA256_RE = re.compile(r"^[0-9a-f]{64}$")


# -- the layout of one repo's folder ----------------------------------------------------------


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


def has_blob(cache_dir: Path, repo_id: str, blob: str) -> bool:
    """Whether the repo's blobs folder holds BLOB (an LFS sha256 or a git blob id)."""
    return (repo_folder(cache_dir, repo_id) / "blobs" / blob).is_file()


def partial_bytes(repo_dir: Path) -> int:
    """The bytes of the downloads in flight (or left by a killed one) in a repo's folder."""
    total = 0
    for tmp in (repo_dir / "blobs").glob("*.incomplete"):
        try:
            total += tmp.stat().st_size
        except OSError:
            pass
    return total


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


def remove_cached(pointer: Path) -> None:
    """Delete a cached file: its blob and the snapshot's link to it."""
    blob = Path(os.path.realpath(pointer))
    blob.unlink(missing_ok=True)
    pointer.unlink(missing_ok=True)


# -- the whole cache, through the hub library's scanner ---------------------------------------


@dataclass
class CachedSnapshot:
    """One revision of one model repo in the HF cache."""

    repo_id: str
    commit: str
    refs: list[str]
    path: Path
    size_on_disk: int
    files: list[dict[str, Any]] = field(default_factory=list)  # path, size_bytes, sha256, lfs


def scan(cache_dir: Path) -> list[CachedSnapshot]:
    """Every model revision in the cache (nothing is read but names and sizes)."""
    from huggingface_hub import scan_cache_dir

    if not Path(cache_dir).is_dir():
        return []
    info = scan_cache_dir(cache_dir)
    out = []
    for repo in sorted(info.repos, key=lambda r: r.repo_id):
        if repo.repo_type != "model":
            continue
        for rev in sorted(repo.revisions, key=lambda r: r.last_modified):
            out.append(
                CachedSnapshot(
                    repo_id=repo.repo_id,
                    commit=rev.commit_hash,
                    refs=sorted(rev.refs),
                    path=Path(rev.snapshot_path),
                    size_on_disk=rev.size_on_disk,
                    files=[_file_facts(f) for f in sorted(rev.files, key=lambda f: f.file_name)],
                )
            )
    return out


def _file_facts(f) -> dict[str, Any]:
    # An LFS blob is named by its sha256: that is the hash, without reading gigabytes. Other
    # blobs (named by their git id) are small files: hash them.
    blob = Path(f.blob_path)
    rel = Path(f.file_path).relative_to(_snapshot_root(Path(f.file_path))).as_posix()
    if SHA256_RE.match(blob.name):
        return {"path": rel, "size_bytes": f.size_on_disk, "sha256": blob.name, "lfs": True}
    digest = hashlib.sha256(blob.read_bytes()).hexdigest()
    return {"path": rel, "size_bytes": f.size_on_disk, "sha256": digest, "lfs": False}


def _snapshot_root(file_path: Path) -> Path:
    # .../snapshots/<commit>/<path in repo>
    parts = file_path.parts
    i = len(parts) - 1 - parts[::-1].index("snapshots")
    return Path(*parts[: i + 2])


@dataclass
class RevisionUsage:
    repo_id: str
    commit: str
    refs: list[str]
    size_on_disk: int
    unique_bytes: int  # freed if this revision alone were deleted
    shared_bytes: int  # blobs other revisions of the repo use too


def disk_usage(cache_dir: Path) -> tuple[list[RevisionUsage], int]:
    """Per revision: its size, what only it uses, what it shares; and the cache's total."""
    from huggingface_hub import scan_cache_dir

    if not Path(cache_dir).is_dir():
        return [], 0
    info = scan_cache_dir(cache_dir)
    rows = []
    for repo in sorted(info.repos, key=lambda r: r.repo_id):
        users: dict[str, set[str]] = {}
        sizes: dict[str, int] = {}
        for rev in repo.revisions:
            for f in rev.files:
                users.setdefault(str(f.blob_path), set()).add(rev.commit_hash)
                sizes[str(f.blob_path)] = f.size_on_disk
        for rev in sorted(repo.revisions, key=lambda r: r.last_modified):
            blobs = {str(f.blob_path) for f in rev.files}
            shared = sum(sizes[b] for b in blobs if len(users[b]) > 1)
            unique = sum(sizes[b] for b in blobs if len(users[b]) == 1)
            rows.append(
                RevisionUsage(
                    repo.repo_id,
                    rev.commit_hash,
                    sorted(rev.refs),
                    rev.size_on_disk,
                    unique,
                    shared,
                )
            )
    return rows, info.size_on_disk


def delete_revision(cache_dir: Path, commit: str) -> int | None:
    """Delete one cached revision through the hub library; bytes freed, None if not there."""
    from huggingface_hub import scan_cache_dir

    if not Path(cache_dir).is_dir():
        return None
    info = scan_cache_dir(cache_dir)
    known = {rev.commit_hash for repo in info.repos for rev in repo.revisions}
    if commit not in known:
        return None
    strategy = info.delete_revisions(commit)
    freed = strategy.expected_freed_size
    strategy.execute()
    return freed


def is_inside(path: str | os.PathLike, folder: str | os.PathLike) -> bool:
    try:
        return Path(path).resolve().is_relative_to(Path(folder).resolve())
    except OSError:
        return False
