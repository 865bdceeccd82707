"""A home shared by several OS users of one group (e.g. /Users/Shared/mlxd).

When the home folder is group-writable, every mlxd process (CLI and daemon) creates files
group-readable and -writable and nothing for others (umask 007): the catalog, the queue and
their WAL files, logs and model folders. A private home keeps the user's own umask.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

SHARED_UMASK = 0o007


def is_shared(home: Path) -> bool:
    try:
        return bool(home.stat().st_mode & stat.S_IWGRP)
    except OSError:
        return False


def apply_umask(home: Path) -> bool:
    """Set the shared umask if ``home`` is shared; True if it was."""
    if not is_shared(home):
        return False
    os.umask(SHARED_UMASK)
    return True


def share_files(home: Path, names=("catalog.db", "queue.db")) -> None:
    """SQLite creates its files 0644 whatever the umask: give the group write access too
    (their -wal and -shm files copy the database's mode). Only the owner can; others skip."""
    if not is_shared(home):
        return
    for name in names:
        for suffix in ("", "-wal", "-shm"):
            p = home / f"{name}{suffix}"
            try:
                mode = p.stat().st_mode
                if mode & 0o060 != 0o060:
                    p.chmod((stat.S_IMODE(mode) | 0o060) & ~0o007)
            except OSError:
                pass


def world_writable(home: Path, limit: int = 10_000) -> list[Path]:
    """Files and folders under ``home`` that anyone may write (at most ``limit`` looked at)."""
    found = []
    for i, (root, dirs, files) in enumerate(os.walk(home)):
        if i > limit:
            break
        for name in dirs + files:
            p = Path(root) / name
            try:
                mode = p.lstat().st_mode
            except OSError:
                continue
            if mode & stat.S_IWOTH and not stat.S_ISLNK(mode):
                found.append(p)
    try:
        if home.stat().st_mode & stat.S_IWOTH:
            found.insert(0, home)
    except OSError:
        pass
    return found
