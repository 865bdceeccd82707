"""Checking a file against the hub's own hash: the LFS sha256 for weights, the git blob id
for small files.

The hub client checks sizes only, so a pull hashes every file right after it arrives (while
it is still in the page cache), or, for a large one, while it arrives (:class:`TailHasher`).
"""

from __future__ import annotations

import hashlib
import threading
import time
from pathlib import Path

from mlxd.hub.preflight import RemoteFile

TAIL_HASH_MIN_BYTES = 1 << 20  # smaller files are hashed right after, in one read


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


def mismatch(f: RemoteFile, sha256: str, git: str | None) -> str | None:
    """How the hashes differ from the hub's (a few words), or None if they match."""
    if f.lfs_sha256 is not None:
        return None if sha256 == f.lfs_sha256 else f"sha256 {sha256[:12]}, hub {f.lfs_sha256[:12]}"
    if f.git_oid and git != f.git_oid:
        return f"git oid {git[:12] if git else '?'}, hub {f.git_oid[:12]}"
    return None


class TailHasher(threading.Thread):
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
