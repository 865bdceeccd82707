"""Pushing a model folder to the hub, with its card as README.md, in one commit."""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from mlxd.hub.environment import settings
from mlxd.hub.errors import HubError, hub_errors


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
    with hub_errors(repo_id, revision, hs.endpoint), tempfile.TemporaryDirectory() as tmp:
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
