"""The hub's refusals as one line a user can act on."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator


class HubError(ValueError):
    """A pull or push that cannot go on; the message is one line a user can act on."""


@contextlib.contextmanager
def hub_errors(repo_id: str, revision: str | None, endpoint: str) -> Iterator[None]:
    """Map huggingface_hub's errors raised inside the block to one-line HubErrors."""
    import httpx2  # huggingface_hub's own HTTP client
    from huggingface_hub.errors import (
        GatedRepoError,
        HfHubHTTPError,
        LocalEntryNotFoundError,
        OfflineModeIsEnabled,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    from mlxd.hub.environment import settings

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
