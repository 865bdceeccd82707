"""Hub names: repo ids, revisions and commits, and the catalog name of a pulled repo.

Stdlib only (no ``huggingface_hub``): the CLI validates a REPO[@REVISION] at submit for free.
"""

from __future__ import annotations

import re
from pathlib import Path

# What the hub accepts as a repo id: "org/name", letters, digits, '-', '_', '.'; no "--" or
# "..", not ending in ".git" (huggingface_hub's validate_repo_id, without importing it).
_REPO_PART = r"[A-Za-z0-9](?:[A-Za-z0-9._-]{0,94}[A-Za-z0-9_-])?"
REPO_ID_RE = re.compile(rf"^{_REPO_PART}/{_REPO_PART}$")
REVISION_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/-]{0,199}$")
COMMIT_RE = re.compile(r"^[0-9a-f]{40}$")


class HubRefError(ValueError):
    """A malformed REPO[@REVISION]."""


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
