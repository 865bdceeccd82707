"""Pre-flight: everything that can refuse a pull, before any weight moves.

It asks the hub for the exact commit, the file list and ``config.json`` (and the safetensors
index), and refuses a missing repo or revision, a gated repo without access, globs matching
nothing or leaving out weight shards, remote code without ``trust_remote_code``, a model type
the caller refuses, or not enough disk. Offline, the HF cache must already hold the snapshot.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mlxd.hub.cache import cached_commit, has_blob, repo_folder
from mlxd.hub.environment import HubSettings, settings
from mlxd.hub.errors import HubError, hub_errors
from mlxd.hub.names import COMMIT_RE
from mlxd.reports.fmt import size as human_bytes  # one byte format everywhere

DEFAULT_MARGIN_BYTES = 512 * 1024**2  # kept free after a download (MLXD_DISK_MARGIN_BYTES)
REMOTE_CODE_SUFFIXES = (".py",)

ModelCheck = Callable[[dict[str, Any]], str | None]  # a model's config -> why it is refused


@dataclass
class RemoteFile:
    path: str
    size: int
    git_oid: str  # the git blob id (sha1 of "blob <size>\0" + bytes)
    lfs_sha256: str | None = None  # set for LFS files: the sha256 of the content

    @property
    def lfs(self) -> bool:
        return self.lfs_sha256 is not None

    @property
    def blob(self) -> str:
        """Its blob's name in the HF cache (what huggingface_hub calls the etag)."""
        return self.lfs_sha256 or self.git_oid


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


def preflight(
    repo_id: str,
    revision: str | None,
    *,
    include: list[str] | None = None,
    exclude: list[str] | None = None,
    trust_remote_code: bool = False,
    model_check: ModelCheck | None = None,
) -> Plan:
    """The plan of a pull, or HubError with the first reason it cannot go on."""
    hs = settings()
    if hs.offline:
        plan = _offline_plan(repo_id, revision, include, exclude, hs)
        _check_model(
            repo_id, [f.path for f in plan.files], plan.config, trust_remote_code, model_check
        )
        return plan
    commit, remote = _remote_files(repo_id, revision, hs.endpoint)
    chosen = _choose(repo_id, remote, include, exclude)
    config = _read_config(repo_id, revision, commit, remote, chosen, hs.endpoint)
    _check_model(repo_id, chosen, config, trust_remote_code, model_check)
    files = [remote[p] for p in chosen]
    plan = Plan(repo_id, revision or "main", commit, files, config)
    plan.missing_bytes = sum(f.size for f in files if not has_blob(hs.cache_dir, repo_id, f.blob))
    check_disk(hs.cache_dir, plan.missing_bytes)
    return plan


def _remote_files(
    repo_id: str, revision: str | None, endpoint: str
) -> tuple[str, dict[str, RemoteFile]]:
    """The commit REVISION points at on the hub, and every file of the repo there."""
    from huggingface_hub import HfApi
    from huggingface_hub.hf_api import RepoFile

    api = HfApi()
    with hub_errors(repo_id, revision, endpoint):
        commit = api.model_info(repo_id, revision=revision).sha
        tree = [
            f
            for f in api.list_repo_tree(repo_id, revision=commit, recursive=True)
            if isinstance(f, RepoFile)
        ]
    if not commit or not COMMIT_RE.match(commit):
        raise HubError(f"the hub gave no commit for {repo_id}@{revision or 'main'}")
    return commit, {
        f.path: RemoteFile(f.path, f.size, f.blob_id, f.lfs.sha256 if f.lfs else None) for f in tree
    }


def _choose(
    repo_id: str,
    remote: dict[str, RemoteFile],
    include: list[str] | None,
    exclude: list[str] | None,
) -> list[str]:
    """The paths the globs choose, with config.json; refused if no weights are among them."""
    from huggingface_hub.utils import filter_repo_objects

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
    return chosen


def _read_config(
    repo_id: str,
    revision: str | None,
    commit: str,
    remote: dict[str, RemoteFile],
    chosen: list[str],
    endpoint: str,
) -> dict[str, Any]:
    """config.json at COMMIT; refused if the globs leave out a shard the index names."""
    from huggingface_hub import hf_hub_download

    with hub_errors(repo_id, revision, endpoint):
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
    return config


def _check_model(
    repo_id: str,
    paths: list[str],
    config: dict[str, Any],
    trust_remote_code: bool,
    model_check: ModelCheck | None,
) -> None:
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


def _offline_plan(
    repo_id: str,
    revision: str | None,
    include: list[str] | None,
    exclude: list[str] | None,
    hs: HubSettings,
) -> Plan:
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


def margin_bytes() -> int:
    try:
        return int(os.environ.get("MLXD_DISK_MARGIN_BYTES", DEFAULT_MARGIN_BYTES))
    except ValueError:
        return DEFAULT_MARGIN_BYTES


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
