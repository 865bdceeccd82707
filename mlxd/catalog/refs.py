"""What a reference to a catalog row means: the one rule both read paths follow.

A person names a model, an adapter or a prompt cache by its catalog name, its catalog id, or
the path of its folder (a cache: its file); a model also by the hub repo it was pulled from
(``org/name``, ``org/name@revision``). :func:`lookups` turns a reference into the lookups to
try, first match wins; :class:`~mlxd.catalog.read.Reader` runs them as plain SQL and the
Store (inside a write transaction's session) as SQLAlchemy queries, and both say
:func:`not_found` when none matches. Stdlib only: read commands import it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mlxd.catalog.errors import NotFound


@dataclass(frozen=True)
class RefKind:
    """A kind of catalog row a person refers to."""

    table: str
    what: str  # in messages
    listed_by: str  # the command that lists them
    path_like: Callable[[str], bool]  # whether a reference may be a path
    by_hub_id: bool = False  # whether ``org/name[@revision]`` names one


def _folder_like(ref: str) -> bool:
    return "/" in ref or ref.startswith(".")


MODEL = RefKind("model", "model", "mlxd models list", _folder_like, by_hub_id=True)
ADAPTER = RefKind("adapter", "adapter", "mlxd adapters list", _folder_like)
PROMPT_CACHE = RefKind(
    "promptcache",
    "prompt cache",
    "mlxd cache-prompt --list",
    lambda ref: "/" in ref or ref.endswith(".safetensors"),
)

HUB = "hub"  # the column of a hub-id lookup: its value is (repo id, revision or "")


def lookups(kind: RefKind, ref: str | int) -> list[tuple[str, Any]]:
    """(column, value) pairs to try in order: the name, the id (digits), the resolved path
    (path-like references), the hub repo (``HUB``: (repo, revision); models only)."""
    ref_s = str(ref)
    out: list[tuple[str, Any]] = [("name", ref_s)]
    if ref_s.isdigit():
        out.append(("id", int(ref_s)))
    if kind.path_like(ref_s):
        out.append(("path", str(Path(ref_s).expanduser().resolve())))
    if kind.by_hub_id and (hub := hub_ref(ref_s)) is not None:
        out.append((HUB, hub))
    return out


def hub_ref(ref: str) -> tuple[str, str] | None:
    """(repo id, revision or "") of ``org/name[@revision]``; None for anything else."""
    repo, _, rev = ref.partition("@")
    return (repo, rev) if repo.count("/") == 1 else None


def snapshot_matches(snapshot: Any, rev: str) -> bool:
    """Whether a pulled snapshot is the revision asked for: any (no revision), the branch or
    tag it was pulled as, or its commit (full, or a prefix of at least 7 hex digits)."""
    return (
        not rev
        or rev == snapshot.revision
        or (len(rev) >= 7 and snapshot.commit_sha.startswith(rev))
    )


def not_found(kind: RefKind, ref: str | int) -> NotFound:
    return NotFound(f"{kind.what} '{ref}' not found; see '{kind.listed_by}'")


def job_not_found(job_id: int) -> NotFound:
    return NotFound(f"job {job_id} not found; see 'mlxd jobs list'")
