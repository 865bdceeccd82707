"""What the hub library sees in this process: endpoint, cache folder, offline mode, token.

Read the way ``huggingface_hub`` reads them (``HF_ENDPOINT``, ``HF_HOME`` / ``HF_HUB_CACHE``,
``HF_HUB_OFFLINE``, ``HF_TOKEN`` or its token file). The token is only ever asked whether it
is there: mlxd never reads, stores or prints it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any


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
